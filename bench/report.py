"""Figures and how they are reported: each figure beside its baseline from the same run, medians over runs,
the spread that tells the noise, and sections of docs/BENCHMARKS.md rewritten in place."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.harness import ROOT, BenchEnv

BENCHMARKS_MD = ROOT / "docs" / "BENCHMARKS.md"
CPU_PER_ITEM = "cpu_per_item_ms"
"""Detail every benchmark reports: the measured service process's CPU time per request, lead or dead letter."""
EXPORT_MEMORY_HEADING = "## Export memory"
"""bench/export_memory.py keeps only what precedes its section, so ours are written before it."""


@dataclass(frozen=True)
class Measurement:
    value: float
    """The figure, in its benchmark's unit."""
    baseline: float
    """The raw ceiling for the same work, measured in the same run."""
    count: int
    """Requests, leads or dead letters behind the figure."""
    load: float
    """1-minute load average as the measurement started."""
    details: Mapping[str, float] = field(default_factory=dict)
    """Secondary figures, e.g. latency percentiles in ms (`p99_ms`, `baseline_p99_ms`)."""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline


class Benchmark(Protocol):
    @property
    def name(self) -> str:
        """Short id used on the command line (`--only ingest`)."""

    @property
    def figure(self) -> str: ...

    @property
    def unit(self) -> str: ...

    @property
    def baseline_label(self) -> str: ...

    async def measure(self, checkout: Path, env: BenchEnv) -> Measurement: ...


@dataclass(frozen=True)
class Summary:
    """Medians over runs; the ratio is the median of each run's own ratio (figure and baseline side by side)."""

    runs: tuple[Measurement, ...]

    @property
    def value(self) -> float:
        return statistics.median(run.value for run in self.runs)

    @property
    def baseline(self) -> float:
        return statistics.median(run.baseline for run in self.runs)

    @property
    def ratio(self) -> float:
        return statistics.median(run.ratio for run in self.runs)

    @property
    def spread(self) -> float:
        """(max - min) / median of the figure over runs: the noise a difference must exceed to mean anything."""
        values = [run.value for run in self.runs]
        return (max(values) - min(values)) / statistics.median(values)

    def detail(self, name: str) -> float | None:
        values = [run.details[name] for run in self.runs if name in run.details]
        return statistics.median(values) if values else None

    @property
    def detail_names(self) -> list[str]:
        return sorted({name for run in self.runs for name in run.details})


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def details_text(summary: Summary) -> str:
    parts = []
    for name in summary.detail_names:
        value = summary.detail(name)
        if value is not None:
            parts.append(f"{name.replace('_ms', '')} {value:,.1f} ms" if name.endswith("_ms") else f"{name} {value:g}")
    return "; ".join(parts)


def runs_text(summary: Summary) -> str:
    return ", ".join(number(run.value) for run in summary.runs)


def loads_text(summaries: Sequence[Summary]) -> str:
    loads = [run.load for summary in summaries for run in summary.runs]
    return f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"


def header(title: str, command: str, machine: str, date: str, runs: int) -> list[str]:
    return [
        f"## {title}",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine}",
        f"- Date: {date}; {runs} run(s) per figure, medians shown",
        "",
    ]


def single_table(benchmarks: Sequence[Benchmark], summaries: Mapping[str, Summary]) -> list[str]:
    lines = [
        "| figure | value | baseline (same run) | ratio to baseline | runs | spread | details |",
        "|---|---|---|---|---|---|---|",
    ]
    for benchmark in benchmarks:
        summary = summaries[benchmark.name]
        lines.append(
            f"| {benchmark.figure} | {number(summary.value)} {benchmark.unit} "
            f"| {number(summary.baseline)} {benchmark.unit}: {benchmark.baseline_label} | {summary.ratio:.3f} "
            f"| {runs_text(summary)} | {summary.spread:.0%} | {details_text(summary)} |"
        )
    lines += ["", f"1-minute load average while measuring: {loads_text(list(summaries.values()))}.", ""]
    return lines


def comparison_table(
    benchmarks: Sequence[Benchmark], before: Mapping[str, Summary], after: Mapping[str, Summary]
) -> list[str]:
    lines = [
        "| figure | before | before baseline | before ratio | after | after baseline | after ratio "
        "| after/before (ratios) | after/before (raw) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for benchmark in benchmarks:
        old, new = before[benchmark.name], after[benchmark.name]
        lines.append(
            f"| {benchmark.figure} ({benchmark.unit}; baseline: {benchmark.baseline_label}) "
            f"| {number(old.value)} | {number(old.baseline)} | {old.ratio:.3f} "
            f"| {number(new.value)} | {number(new.baseline)} | {new.ratio:.3f} "
            f"| **{new.ratio / old.ratio:.3f}** | {new.value / old.value:.3f} |"
        )
    lines += [
        "",
        "| figure | runs before (spread) | runs after (spread) | service CPU per item after/before "
        "| details before | details after |",
        "|---|---|---|---|---|---|",
    ]
    for benchmark in benchmarks:
        old, new = before[benchmark.name], after[benchmark.name]
        cpu_old, cpu_new = old.detail(CPU_PER_ITEM), new.detail(CPU_PER_ITEM)
        cpu = f"{cpu_new / cpu_old:.3f}" if cpu_old and cpu_new else "-"
        lines.append(
            f"| {benchmark.figure} | {runs_text(old)} ({old.spread:.0%}) | {runs_text(new)} ({new.spread:.0%}) "
            f"| {cpu} | {details_text(old)} | {details_text(new)} |"
        )
    everything = [*before.values(), *after.values()]
    lines += ["", f"1-minute load average while measuring: {loads_text(everything)}.", ""]
    return lines


def write_section(title: str, lines: Sequence[str], path: Path = BENCHMARKS_MD) -> None:
    """Replaces the section headed `## {title}` (up to the next `## `), or adds it before the export memory
    section; every other section is kept as it was."""
    existing = path.read_text() if path.exists() else "# Benchmarks\n"
    heading = f"## {title}"
    body = "\n".join(lines).rstrip() + "\n"
    kept: list[str] = []
    skipping = False
    for line in existing.splitlines():
        if line.startswith("## "):
            skipping = line == heading
        if not skipping:
            kept.append(line)
    text = "\n".join(kept).rstrip() + "\n"
    if EXPORT_MEMORY_HEADING in text:
        head, tail = text.split(EXPORT_MEMORY_HEADING, 1)
        text = head.rstrip() + "\n\n" + body + "\n" + EXPORT_MEMORY_HEADING + tail
    else:
        text = text + "\n" + body
    path.write_text(text)
