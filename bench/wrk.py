"""wrk, the benchmarks' HTTP load generator: run with a Lua script (bench/*.lua) that ends by printing its figures
as one `BENCH_JSON {...}` line. A figure made of errors is refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from bench.harness import BenchError


async def run_wrk(
    arguments: Sequence[str], environ: Mapping[str, str], what: str, *, stop_at: bytes | None = None
) -> dict[str, Any]:
    """The script's figures. `environ`: what the script reads; `stop_at`: a line the script prints once it has
    what it came for (wrk's own `thread:stop()` leaves it running to the end of `-d`)."""
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: apt-get install -y wrk")
    process = await asyncio.create_subprocess_exec(
        "wrk", *arguments, env={**environ, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    if stop_at is not None:
        assert process.stdout is not None
        async for line in process.stdout:
            if line.startswith(stop_at):
                process.send_signal(signal.SIGINT)  # wrk then prints its figures at once
                break
    out, err = await process.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("BENCH_JSON ")]
    if process.returncode != 0 or not lines:
        raise BenchError(f"wrk failed ({process.returncode}): {out.decode()[-1000:]} {err.decode()[-1000:]}")
    result: dict[str, Any] = orjson.loads(lines[-1].removeprefix("BENCH_JSON "))
    errors = {name: result[name] for name in result if name.endswith(("_errors", "timeouts")) and result[name]}
    if errors or not result["requests"]:
        raise BenchError(f"{what}: {result['requests']} requests with errors {errors}")
    return result
