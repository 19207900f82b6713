"""docs/BENCHMARKS.md sections: each benchmark run rewrites its own section and keeps every other one."""

from __future__ import annotations

from pathlib import Path

from bench.report import Measurement, Summary, write_section

EXPORT_MEMORY = "## Export memory (2026-11-28)\n\n| export | rows |\n|---|---|\n| large | 1,000,000 |\n"


def test_a_new_section_goes_before_export_memory_which_keeps_only_what_precedes_it(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n" + EXPORT_MEMORY)
    write_section("Throughput", ["## Throughput", "", "figures"], path)
    text = path.read_text()
    assert text.index("## Throughput") < text.index("## Export memory")
    assert text.endswith(EXPORT_MEMORY)


def test_writing_a_section_again_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Other\n\nkept\n\n" + EXPORT_MEMORY)
    write_section("Throughput", ["## Throughput", "", "old figures"], path)
    write_section("Throughput", ["## Throughput", "", "new figures"], path)
    text = path.read_text()
    assert text.count("## Throughput") == 1
    assert "new figures" in text
    assert "old figures" not in text
    assert "## Other\n\nkept" in text


def test_the_ratio_is_the_median_of_each_runs_own_ratio() -> None:
    runs = (
        Measurement(value=100, baseline=1000, count=1, load=0),
        Measurement(value=60, baseline=400, count=1, load=0),
        Measurement(value=90, baseline=1000, count=1, load=0),
    )
    summary = Summary(runs)
    assert summary.ratio == 0.1  # ratios 0.1, 0.15, 0.09; the ratio of medians would be 0.09
    assert summary.value == 90
    assert summary.spread == (100 - 60) / 90
