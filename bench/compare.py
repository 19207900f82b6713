"""Before and after a change: each throughput benchmark against two checkouts of the project, alternating
which goes first, medians over runs; writes the comparison's section of docs/BENCHMARKS.md.

Make the baseline checkout outside the project, e.g. `git worktree add ../bench-before <commit>`, then:
    python -m bench.compare --before ../bench-before --after . [--runs 3] [--only NAMES] [--title TITLE]
Both run on this virtualenv; each side's services import only its own checkout's code.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import BenchEnv, BenchError, imports_from, machine
from bench.report import Measurement, Summary, comparison_table, header, write_section
from bench.runner import measure_once
from bench.throughput import benchmarks, command_line, revision


def arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("--before", type=Path, required=True, help="checkout of the code before the change")
    parser.add_argument("--after", type=Path, required=True, help="checkout of the code after the change")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--title", default="Throughput before and after", help="heading of the section written")
    parser.add_argument("--no-write", action="store_true", help="print only, leave docs/BENCHMARKS.md alone")
    return parser.parse_args(argv)


async def main(argv: Sequence[str]) -> None:
    options = arguments(argv)
    chosen = benchmarks(options.only)
    env = BenchEnv.from_environ()
    sides = {"before": options.before.resolve(), "after": options.after.resolve()}
    for checkout in sides.values():
        await imports_from(checkout, env)
    results: dict[str, dict[str, list[Measurement]]] = {side: {b.name: [] for b in chosen} for side in sides}
    lost: list[str] = []
    for run in range(1, options.runs + 1):
        # Alternating the order spreads drift on a shared machine (other load, a warming cache) over both sides.
        order = ["before", "after"] if run % 2 else ["after", "before"]
        for benchmark in chosen:
            pair: dict[str, Measurement] = {}
            try:
                for side in order:
                    pair[side] = await measure_once(benchmark, sides[side], env, f"{side}, run {run}")
            except BenchError as error:
                # A checkout being edited can fail to start: the run is lost for both sides, the rest goes on.
                lost.append(f"{benchmark.name}, run {run}, {side}: {str(error).splitlines()[0][:300]}")
                print(f"[bench] lost: {lost[-1]}", flush=True)
                continue
            for side, measurement in pair.items():
                results[side][benchmark.name].append(measurement)
    measured = [benchmark for benchmark in chosen if results["before"][benchmark.name]]
    summaries = {
        side: {name: Summary(tuple(runs)) for name, runs in by_name.items() if runs}
        for side, by_name in results.items()
    }
    lines = [
        *header(options.title, command_line("bench.compare", argv), machine(), f"{datetime.now(UTC):%Y-%m-%d}",
                options.runs),
        f"Before: the checkout at {revision(sides['before'])}; after: the checkout at "
        f"{revision(sides['after'])}. Each figure's baseline is the raw ceiling for the same work, measured in "
        "the same run; a side's ratio is the median of its runs' figure/baseline. **after/before (ratios)** "
        "divides the after ratio by the before ratio, so load that slows a whole run cancels out; 1.000 means "
        "unchanged, below 0.950 means more than 5% slower. Spread is (max - min) / median of a side's runs. "
        "Service CPU per item is the measured process's own CPU time per request, lead or dead letter: far "
        "steadier than throughput when both sides see a similar load, though it rises with load too. The details "
        "give the machine CPU account of each side's window (bench/machine_cpu.py): each group's CPU ms per item "
        "(the services, PostgreSQL, RabbitMQ, the load generator, other), the machine's idle share, and the rate "
        "the target needs beside the rate the two cores allow at that CPU per item.",
        "",
        *comparison_table(measured, summaries["before"], summaries["after"]),
        *([f"Runs lost (both sides dropped): {'; '.join(lost)}.", ""] if lost else []),
    ]  # fmt: skip
    print("\n".join(lines))
    if not options.no_write:
        write_section(options.title, lines)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
