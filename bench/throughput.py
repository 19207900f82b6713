"""Every throughput figure of one checkout, each with its baseline from the same run; writes its section of
docs/BENCHMARKS.md.

Usage (after `bash deploy/local/stack.sh infra` and `migrate`, with .run/stack.env sourced):
    python -m bench.throughput [--checkout DIR] [--runs 3] [--only ingest,distribution,dlq_capture] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.distribution import Distribution
from bench.dlq_capture import DlqCapture
from bench.harness import ROOT, BenchEnv, BenchError, machine
from bench.ingest import Ingest
from bench.report import Benchmark, header, single_table, write_section
from bench.runner import measure_runs

SECTION = "Throughput"


def benchmarks(only: str | None = None) -> list[Benchmark]:
    """Every throughput benchmark at its default size; a new figure is one more entry here."""
    every: list[Benchmark] = [Ingest(), Distribution(), DlqCapture()]
    if not only:
        return every
    names = only.split(",")
    unknown = set(names) - {benchmark.name for benchmark in every}
    if unknown:
        raise BenchError(f"unknown benchmark(s) {sorted(unknown)}; known: {[b.name for b in every]}")
    return [benchmark for benchmark in every if benchmark.name in names]


def revision(checkout: Path) -> str:
    """Short commit of the checkout, marked when its work tree has uncommitted changes."""
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    return f"{commit or 'unknown'}{' with uncommitted changes' if dirty else ''}"


def command_line(module: str, argv: Sequence[str]) -> str:
    return shlex.join(["python", "-m", module, *argv])


def arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="project checkout whose services run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/BENCHMARKS.md alone")
    return parser.parse_args(argv)


async def main(argv: Sequence[str]) -> None:
    options = arguments(argv)
    chosen = benchmarks(options.only)
    summaries = await measure_runs(chosen, options.checkout, BenchEnv.from_environ(), options.runs)
    lines = [
        *header(SECTION, command_line("bench.throughput", argv), machine(), f"{datetime.now(UTC):%Y-%m-%d}",
                options.runs),
        f"Checkout: {revision(options.checkout)}. Each figure's baseline is the raw ceiling for the same work, "
        "measured in the same run; the ratio is the median of each run's figure/baseline.",
        "",
        *single_table(chosen, summaries),
    ]  # fmt: skip
    print("\n".join(lines))
    if not options.no_write:
        write_section(SECTION, lines)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
