"""One export in a fresh process, reporting its resident memory before and at its peak (from /proc)."""

import asyncio
import sys
import time
import uuid
from pathlib import Path

import orjson
from sqlalchemy.ext.asyncio import create_async_engine

from export_worker.exports import run_export


def memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak() -> None:
    """Writing 5 to clear_refs resets VmHWM to the current RSS, so the peak is the export's own."""
    Path("/proc/self/clear_refs").write_text("5")


async def main(database_url: str, export_id: str, export_dir: str) -> None:
    engine = create_async_engine(database_url)
    async with engine.connect():
        pass  # the pool and driver are loaded before the baseline is read
    reset_peak()
    before = memory_kb("VmRSS")
    started = time.perf_counter()
    finished = await run_export(engine, uuid.UUID(export_id), Path(export_dir), 2_000)
    elapsed = time.perf_counter() - started
    print(orjson.dumps({"rows": finished.row_count, "bytes": finished.bytes, "seconds": round(elapsed, 2),
                        "rss_before_kb": before, "rss_peak_kb": memory_kb("VmHWM")}).decode())  # fmt: skip
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
