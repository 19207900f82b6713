"""The machine CPU account: read from /proc over a window, each group's time found where it was spent, the groups
never adding up to more than the machine was busy, the idle share a share. No speed is asserted."""

from __future__ import annotations

import subprocess
import sys
import time

import asyncpg

from bench.machine_cpu import (
    BENCH,
    CORES,
    OTHER,
    POSTGRESQL,
    TICK_S,
    CpuUse,
    Groups,
    database_name,
    postgresql_database,
    since,
    snapshot,
)
from tests.conftest import wait_for

BURN = "while True: pass"
BURN_FOR_A_WHILE = "import time\nwhile time.process_time() < 0.25: pass"


def test_a_backend_title_names_its_database_and_a_shared_process_none() -> None:
    assert postgresql_database("postgres: 15/main: fmhl fmhl_h1 127.0.0.1(41912) idle") == "fmhl_h1"
    assert postgresql_database("postgres: fmhl fmhl_h1 [local] SELECT") == "fmhl_h1"
    assert postgresql_database("postgres: 15/main: autovacuum worker fmhl_h1") == "fmhl_h1"
    assert postgresql_database("postgres: 15/main: walwriter") is None
    assert postgresql_database("postgres: 15/main: background writer") is None


def test_the_database_name_is_the_urls_last_segment() -> None:
    assert database_name("postgresql+asyncpg://user:secret@127.0.0.1:5432/fmhl_h1?ssl=disable") == "fmhl_h1"


def test_a_services_cpu_is_counted_in_its_group_and_the_groups_add_up_to_at_most_busy() -> None:
    service = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        groups = Groups("no-such-database", {"burner": [service.pid]})
        start = snapshot(groups)
        wait_for(lambda: since(start, groups).groups["burner"] >= 0.2, 30, "the burner to spend 0.2 s of CPU")
        use = since(start, groups)
    finally:
        service.kill()
        service.wait()
    assert 0.0 <= use.idle_share <= 1.0
    assert use.groups["burner"] > 0
    assert use.groups[OTHER] >= 0
    # Each process's reading is rounded down to a tick, the machine's too: at most one tick apart per process read.
    assert use.named_s <= use.busy_s + TICK_S * (len(snapshot(groups).cpu_s) + 1)
    details = use.details(items=10)
    assert details["cpu_burner_ms"] == 1000 * use.groups["burner"] / 10
    assert details["machine_idle_share"] == round(use.idle_share, 3)


def test_a_child_that_ended_within_the_window_counts_with_this_process() -> None:
    groups = Groups("no-such-database")
    start = snapshot(groups)
    subprocess.run([sys.executable, "-c", BURN_FOR_A_WHILE], check=True)
    assert since(start, groups).groups[BENCH] >= 0.2


async def test_the_benchmarks_database_backends_count_as_postgresql(database_url: str) -> None:
    url = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    db = await asyncpg.connect(url)
    try:
        groups = Groups(database_name(database_url))
        start = snapshot(groups)
        spent = 0.0
        deadline = time.monotonic() + 30
        while spent < 0.1 and time.monotonic() < deadline:
            await db.fetchval("SELECT count(*) FROM generate_series(1, 2000000)")
            spent = since(start, groups).groups[POSTGRESQL]
    finally:
        await db.close()
    assert spent >= 0.1


def test_a_saturated_machine_whose_cpu_per_item_allows_less_than_the_target_is_a_ceiling() -> None:
    use = CpuUse(busy_s=2.0, idle_s=0.0, groups={"worker": 1.5, OTHER: 0.5})
    reading = use.ceiling(items=100, target_rate=150.0)
    assert reading["rate_cores_allow"] == round(CORES * 100 / 2.0, 1)
    assert reading["rate_cores_allow_without_other"] == round(CORES * 100 / 1.5, 1)
    assert reading["cpu_ceiling_below_target"] == float(CORES * 100 / 1.5 < 150.0)


def test_idle_cores_are_no_ceiling_whatever_the_cpu_per_item() -> None:
    use = CpuUse(busy_s=1.0, idle_s=1.0, groups={"worker": 1.0, OTHER: 0.0})
    assert use.ceiling(items=10, target_rate=1000.0)["cpu_ceiling_below_target"] == 0.0
