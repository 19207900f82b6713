"""Running benchmarks: one alone on a checkout from its own command line, or several over runs."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import ROOT, BenchEnv, imports_from, machine
from bench.report import Benchmark, Measurement, Summary, single_table


async def measure_once(benchmark: Benchmark, checkout: Path, env: BenchEnv, label: str) -> Measurement:
    print(f"[bench] {benchmark.name} on {label} ({checkout}) ...", flush=True)
    measurement = await benchmark.measure(checkout, env)
    print(
        f"[bench] {benchmark.name} on {label}: {measurement.value:,.1f} {benchmark.unit}, baseline "
        f"{measurement.baseline:,.1f}, ratio {measurement.ratio:.3f}, load {measurement.load:.1f} "
        f"{dict((k, round(v, 3)) for k, v in measurement.details.items())}",
        flush=True,
    )
    return measurement


async def measure_runs(benchmarks: Sequence[Benchmark], checkout: Path, env: BenchEnv, runs: int) -> dict[str, Summary]:
    await imports_from(checkout, env)
    results: dict[str, list[Measurement]] = {benchmark.name: [] for benchmark in benchmarks}
    for run in range(1, runs + 1):
        for benchmark in benchmarks:
            results[benchmark.name].append(await measure_once(benchmark, checkout, env, f"run {run}"))
    return {name: Summary(tuple(measurements)) for name, measurements in results.items()}


def run_alone(benchmark: Benchmark, argv: Sequence[str]) -> None:
    """`python -m bench.<name>`: measure this checkout (or --checkout) and print the table; writes nothing."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{benchmark.name}")
    parser.add_argument("--checkout", type=Path, default=ROOT, help="project checkout whose services run")
    parser.add_argument("--runs", type=int, default=1)
    arguments = parser.parse_args(argv)
    summaries = asyncio.run(measure_runs([benchmark], arguments.checkout, BenchEnv.from_environ(), arguments.runs))
    print(f"\n{machine()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print("\n".join(single_table([benchmark], summaries)))
