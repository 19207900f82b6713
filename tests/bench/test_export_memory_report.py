"""The export memory report replaces its own section of BENCHMARKS.md and keeps every other one."""

from __future__ import annotations

from pathlib import Path

from bench.export_memory import write_report

EXISTING = "# Benchmarks\n\n## Throughput\nfigures\n\n## Export memory (2026-11-28)\nold\n\n## Later section\nkept\n"


def test_only_the_export_memory_section_is_replaced(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    target.write_text(EXISTING)
    write_report("## Export memory (2026-11-30)\nnew\n", target)
    assert target.read_text() == (
        "# Benchmarks\n\n## Throughput\nfigures\n\n## Export memory (2026-11-30)\nnew\n\n## Later section\nkept\n"
    )


def test_a_file_without_the_section_gets_it_at_the_end(tmp_path: Path) -> None:
    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\n## Throughput\nfigures\n")
    write_report("## Export memory (2026-11-30)\nnew\n", target)
    assert target.read_text().endswith("figures\n\n## Export memory (2026-11-30)\nnew\n")
