"""export-worker memory stays flat: peak RSS growth of a 1,000,000-row export against a 1,000-row baseline,
each in a fresh process on the same machine in the same run. Target: growth under 50 MB (issue 12).

Usage (after `bash deploy/local/stack.sh infra`): python -m bench.export_memory [--rows 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

ROOT = Path(__file__).resolve().parents[1]
GROWTH_LIMIT_MB = 50
MARKER = "## Export memory"


async def seed(engine: AsyncEngine, label: str, rows: int) -> str:
    """A provider with `rows` assignments today and an export request for them; reused when already there."""
    async with engine.begin() as connection:
        provider = await connection.scalar(text("SELECT id FROM providers WHERE name = :n"), {"n": label})
        if provider is None:
            source = await connection.scalar(
                text("INSERT INTO lead_sources (name, api_key_hash) VALUES (:n, :h) RETURNING id"),
                {"n": label, "h": f"bench-{label}"},
            )
            provider = await connection.scalar(
                text("INSERT INTO providers (name, email) VALUES (:n, 'bench@example.com') RETURNING id"), {"n": label}
            )
            subscription = await connection.scalar(
                text("INSERT INTO subscriptions (provider_id, category, zip_codes, price_cents) "
                     "VALUES (:p, :c, '{94107}', 100) RETURNING id"), {"p": provider, "c": label},
            )  # fmt: skip
            await connection.execute(
                text("INSERT INTO leads (source_id, external_id, category, zip, contact, status) "
                     "SELECT :s, 'bench-' || g, :c, '94107', '{\"name\": \"=cmd\"}', 'distributed' "
                     "FROM generate_series(1, :rows) g"), {"s": source, "c": label, "rows": rows},
            )  # fmt: skip
            await connection.execute(
                text("INSERT INTO assignments (lead_id, provider_id, subscription_id, price_cents) "
                     "SELECT id, :p, :sub, 100 FROM leads WHERE source_id = :s"),
                {"p": provider, "sub": subscription, "s": source},
            )  # fmt: skip
        export_id = await connection.scalar(
            text(
                "INSERT INTO report_exports (kind, provider_id, date_from, date_to) "
                "VALUES ('assignments', :p, current_date, current_date) RETURNING id"
            ),
            {"p": provider},
        )
        return str(export_id)


def measure(database_url: str, export_id: str, export_dir: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.export_run", database_url, export_id, export_dir],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    result: dict[str, float] = orjson.loads(output.strip().splitlines()[-1])
    return result


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.machine(),
    )  # fmt: skip
    memory_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemTotal")))  # fmt: skip
    return f"{os.cpu_count()} cores ({cpu}), {memory_kb // 1024 // 1024} GiB, Python {platform.python_version()}"


async def main(rows: int, write: bool = True) -> None:
    database_url = os.environ["TEST_DATABASE_URL"]
    engine = create_async_engine(database_url)
    baseline_id = await seed(engine, "bench-export-1k", 1_000)
    large_id = await seed(engine, f"bench-export-{rows}", rows)
    await engine.dispose()
    with tempfile.TemporaryDirectory() as folder:
        baseline = measure(database_url, baseline_id, folder)
        large = measure(database_url, large_id, folder)
    growth = {name: (r["rss_peak_kb"] - r["rss_before_kb"]) / 1024 for name, r in (("1k", baseline), ("large", large))}
    report = [
        f"## Export memory ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"- Command: `task bench` (`python -m bench.export_memory --rows {rows}`)",
        f"- Machine: {machine()}",
        "",
        "| export | rows | seconds | rows/s | RSS before (MB) | RSS peak (MB) | growth (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in (("baseline", baseline), ("large", large)):
        key = "1k" if name == "baseline" else "large"
        report.append(
            f"| {name} | {int(result['rows']):,} | {result['seconds']} | {int(result['rows'] / result['seconds']):,} "
            f"| {result['rss_before_kb'] / 1024:.1f} | {result['rss_peak_kb'] / 1024:.1f} | {growth[key]:.1f} |"
        )
    report += [
        "",
        f"Growth for {rows:,} rows is {growth['large']:.1f} MB against {growth['1k']:.1f} MB for 1,000 rows "
        f"({growth['large'] - growth['1k']:+.1f} MB for {rows // 1000:,}x the rows); "
        f"target: under {GROWTH_LIMIT_MB} MB. "
        "The query streams through a server-side cursor in batches of 2,000 rows; the CSV is written through a "
        "temporary file renamed into place.",
        "",
    ]
    print("\n".join(report))
    if write:
        write_report("\n".join(report), ROOT / "docs" / "BENCHMARKS.md")


def write_report(report: str, target: Path) -> None:
    """Replaces this benchmark's own section (up to the next `## `) and keeps every other one."""
    existing = target.read_text() if target.exists() else "# Benchmarks\n"
    start = existing.find(MARKER)
    if start < 0:
        target.write_text(existing.rstrip() + "\n\n" + report.rstrip() + "\n")
        return
    end = existing.find("\n## ", start + 1)
    rest = existing[end + 1 :] if end >= 0 else ""
    target.write_text(existing[:start] + report.rstrip() + "\n" + ("\n" + rest if rest else ""))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/BENCHMARKS.md alone")
    options = parser.parse_args()
    asyncio.run(main(options.rows, write=not options.no_write))
