"""Every throughput figure of one checkout, each with its baseline from the same run, then every service's memory
after those runs; writes both sections of docs/BENCHMARKS.md.

Usage (after `bash deploy/local/stack.sh infra` and `migrate`, with .run/stack.env sourced):
    python -m bench.throughput [--checkout DIR] [--runs 3] [--only ingest,distribution,dlq_capture] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.distribution import Distribution
from bench.dlq_capture import DlqCapture
from bench.harness import ROOT, SERVICE_PACKAGES, BenchEnv, BenchError, MemoryLog, machine, running, start_service
from bench.ingest import Ingest
from bench.report import Benchmark, header, single_table, write_section
from bench.runner import measure_runs

SECTION = "Throughput"
MEMORY_SECTION = "Memory after the benchmark runs"
RSS_LIMIT_MB = 150
IDLE_PORT = 18_590
"""First of the ports of the services no benchmark drives, started after the runs for their reading."""
IDLE_SETTINGS = {"email-worker": {"SMTP_HOST": os.environ.get("SMTP_HOST", "127.0.0.1")}}
"""What a service requires beyond the benchmarks' environment; idle, it connects to nothing it names here."""


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


async def read_idle(checkout: Path, env: BenchEnv, names: Sequence[str], first_port: int = IDLE_PORT) -> None:
    """The services no benchmark drove: started, ready, then stopped, so that the table names all six."""
    for offset, name in enumerate(names):
        async with running(start_service(checkout, name, env, first_port + offset, extra=IDLE_SETTINGS.get(name))):
            pass


def memory_table(memory: MemoryLog) -> list[str]:
    """Each service's resident memory as it stopped after its work (the largest over runs), and its peak."""
    lines = [
        f"| service | RSS after its run (MB) | peak RSS (MB) | runs | under {RSS_LIMIT_MB} MB |",
        "|---|---|---|---|---|",
    ]
    for service, readings in sorted(memory.by_service().items()):
        after = max(reading.rss_mb for reading in readings)
        peak = max(reading.peak_mb for reading in readings)
        verdict = "yes" if peak < RSS_LIMIT_MB else "**no**"
        lines.append(f"| {service} | {after:.1f} | {peak:.1f} | {len(readings)} | {verdict} |")
    return lines


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
    """The command as the report shows it: a checkout named by its commit, never by where it lies on this machine."""
    shown = [f"<checkout at {revision(Path(arg))}>" if Path(arg).is_dir() else arg for arg in argv]
    return shlex.join(["python", "-m", module, *shown])


def arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="project checkout whose services run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/BENCHMARKS.md alone")
    parser.add_argument("--no-idle", action="store_true", help="do not start the services no benchmark drives")
    return parser.parse_args(argv)


async def main(argv: Sequence[str]) -> None:
    options = arguments(argv)
    chosen = benchmarks(options.only)
    env = BenchEnv.from_environ()
    summaries = await measure_runs(chosen, options.checkout, env, options.runs)
    driven = set(env.memory.by_service())
    idle = [] if options.no_idle else [name for name in SERVICE_PACKAGES if name not in driven]
    await read_idle(options.checkout, env, idle)
    command, today = command_line("bench.throughput", argv), f"{datetime.now(UTC):%Y-%m-%d}"
    lines = [
        *header(SECTION, command, machine(), today, options.runs),
        f"Checkout: {revision(options.checkout)}. Each figure's baseline is the raw ceiling for the same work, "
        "measured in the same run; the ratio is the median of each run's figure/baseline.",
        "",
        *single_table(chosen, summaries),
    ]  # fmt: skip
    memory = [
        *header(MEMORY_SECTION, command, machine(), today, options.runs),
        "Each service's resident set size (RSS, /proc) as the benchmark stopped it after its work, and its peak over "
        f"its life; target: every service under {RSS_LIMIT_MB} MB. "
        + (f"Not driven by any benchmark, read after starting up idle: {', '.join(idle)}." if idle else ""),
        "",
        *memory_table(env.memory),
        "",
    ]
    print("\n".join([*lines, *memory]))
    if not options.no_write:
        write_section(SECTION, lines)
        write_section(MEMORY_SECTION, memory)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
