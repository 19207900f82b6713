"""bench.distribution_wal still works: one measurement at a tiny size, each kind of assignment id, on the test
database (no truncation, no history). No speed is asserted here."""

from __future__ import annotations

import pytest

from bench.distribution_overlap import market, plain_url
from bench.distribution_wal import measure


@pytest.mark.parametrize("ordered", [False, True], ids=["random-ids", "time-ordered-ids"])
async def test_a_measurement_yields_a_row_of_figures(database_url: str, ordered: bool) -> None:
    row = await measure(plain_url(database_url), market(5, every_lead=False), 5, "smoke", ordered=ordered)
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:2] == ["smoke", "time-ordered" if ordered else "random"]
    assert float(cells[3]) > 0
    assert float(cells[4]) > 0
