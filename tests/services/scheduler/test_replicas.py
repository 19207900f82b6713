"""Scheduler replicas as real processes under a clock that runs 480 times fast: each slot runs once, whatever
runs and whatever dies; downtime coalesces into one catch-up."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import col

from libs.db.tables import RunStatus, RunTrigger, ScheduledJobRun

pytestmark = pytest.mark.stack
RATE = 480.0  # a simulated day in three real minutes; a 5-minute slot every 0.625 s


def a_fresh_day(database_url: str) -> datetime:
    """A midnight after every slot any earlier run claimed: the scheduler only moves forward in time."""

    async def latest() -> datetime | None:
        engine = create_async_engine(database_url)
        async with engine.connect() as connection:
            value = await connection.scalar(select(func.max(col(ScheduledJobRun.slot))))
        await engine.dispose()
        return value

    after = max(asyncio.run(latest()) or datetime(2100, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    return datetime(after.year, after.month, after.day, tzinfo=UTC) + timedelta(days=2)


def claimed_before(database_url: str, slot: datetime) -> None:
    async def plant() -> None:
        engine = create_async_engine(database_url)
        async with engine.begin() as connection:
            await connection.execute(
                # Finished now, as the replicas' own runs are (they stamp the real time): a finish in 2100 would
                # be every later test's "last success", and silence the alert on it in the shared database.
                insert(ScheduledJobRun).values(
                    job="subscription-reactivation", slot=slot, status=RunStatus.succeeded, finished_at=func.now()
                )
            )
        await engine.dispose()

    asyncio.run(plant())


class Replicas:
    def __init__(self, service_env: dict[str, str], start: datetime, epoch: float, logs: Path) -> None:
        self.env = {**os.environ, **service_env, "CLOCK_RATE": str(RATE), "CLOCK_START": start.isoformat(),
                    "CLOCK_EPOCH": str(epoch), "TICK_S": "5", "MISFIRE_GRACE_S": "600", "PREFETCH": "4",
                    "BALANCE_RECONCILIATION_ENABLED": "false", "DLQ_CLEANUP_ENABLED": "false",
                    "LOG_LEVEL": "INFO"}  # fmt: skip
        self.logs = logs
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, port: int) -> None:
        log = (self.logs / f"scheduler-{port}.log").open("ab")
        self.processes[port] = subprocess.Popen(
            [sys.executable, "-m", "scheduler"], env=self.env | {"HTTP_PORT": str(port)}, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError((self.logs / f"scheduler-{port}.log").read_text()[-3000:])

    def stop(self, port: int, sig: int = signal.SIGTERM) -> None:
        process = self.processes.pop(port)
        process.send_signal(sig)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for port in list(self.processes):
            self.stop(port)


@pytest.fixture
def replicas(
    service_env: dict[str, str], database_url: str, tmp_path: Path
) -> Iterator[tuple[Replicas, datetime, float]]:
    start = a_fresh_day(database_url)
    # The slot before the day ran, as on a scheduler that was already running: replicas that a loaded machine
    # starts after the clock passed `start` coalesce the slots they missed into their first run, not lose them.
    claimed_before(database_url, start - timedelta(minutes=5))
    epoch = time.time() + 6  # both replicas are normally up before the clock reaches `start`
    group = Replicas(service_env, start, epoch, tmp_path)
    yield group, start, epoch
    group.stop_all()


def clock_at(start: datetime, epoch: float) -> datetime:
    return start + timedelta(seconds=(time.time() - epoch) * RATE)


def wait_for_clock(start: datetime, epoch: float, moment: datetime) -> None:
    remaining = (moment - clock_at(start, epoch)).total_seconds() / RATE
    if remaining > 0:
        time.sleep(remaining)


Run = tuple[datetime, RunStatus, RunTrigger, int]
FINISHED = {RunStatus.succeeded, RunStatus.failed}


def runs(database_url: str, start: datetime, end: datetime) -> list[Run]:
    """subscription-reactivation runs with slots in [start, end): slot, status, trigger, coalesced slots."""

    async def query() -> list[Run]:
        engine = create_async_engine(database_url)
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(
                    col(ScheduledJobRun.slot),
                    col(ScheduledJobRun.status),
                    col(ScheduledJobRun.trigger),
                    col(ScheduledJobRun.coalesced_slots),
                )
                .where(
                    col(ScheduledJobRun.job) == "subscription-reactivation",
                    col(ScheduledJobRun.slot) >= start,
                    col(ScheduledJobRun.slot) < end,
                )
                .order_by(col(ScheduledJobRun.slot))
            )
            found = [(row.slot, row.status, row.trigger, row.coalesced_slots) for row in rows]
        await engine.dispose()
        return found

    return asyncio.run(query())


def finished_runs(
    database_url: str, start: datetime, end: datetime, last_slot: datetime, timeout: float = 30
) -> list[Run]:
    """The runs in [start, end) once one at or after `last_slot` is claimed and none is queued or running."""
    deadline = time.monotonic() + timeout
    while True:
        found = runs(database_url, start, end)
        if found and found[-1][0] >= last_slot and all(status in FINISHED for _, status, _, _ in found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"runs still queued or running, or not claimed, after {timeout} s: {found[-3:]}")
        time.sleep(0.2)


def test_two_replicas_run_each_of_288_slots_once_even_when_one_is_killed(
    replicas: tuple[Replicas, datetime, float], database_url: str
) -> None:
    group, start, epoch = replicas
    group.start(19_001)
    group.start(19_002)
    wait_for_clock(start, epoch, start + timedelta(hours=12))
    group.stop(19_001, signal.SIGKILL)
    wait_for_clock(start, epoch, start + timedelta(hours=24))
    day = finished_runs(database_url, start, start + timedelta(hours=24), start + timedelta(hours=23, minutes=55))

    slots = [slot for slot, _, _, _ in day]
    assert len(set(slots)) == len(slots)
    # Each slot ran once, or (on a machine too starved to tick within 0.6 s, a 5-minute slot at this rate, or to
    # start both replicas before the simulated day began) was folded into the next run as designed: never run
    # twice, never lost, the first run covering the day's first slot.
    first_slot, _, _, first_coalesced = day[0]
    assert first_slot - first_coalesced * timedelta(minutes=5) == start
    assert sum(1 + coalesced for _, _, _, coalesced in day) == 288
    assert all(
        (later - earlier) == timedelta(minutes=5 * (1 + coalesced))
        for (earlier, _, _, _), (later, _, _, coalesced) in itertools.pairwise(day)
    )
    assert {status for _, status, _, _ in day} == {RunStatus.succeeded}


def test_a_scheduler_stopped_for_30_minutes_runs_one_catch_up_not_six(
    replicas: tuple[Replicas, datetime, float], database_url: str
) -> None:
    group, start, epoch = replicas
    group.start(19_003)
    wait_for_clock(start, epoch, start + timedelta(minutes=21))
    group.stop(19_003)
    stopped_at = clock_at(start, epoch)
    wait_for_clock(start, epoch, stopped_at + timedelta(minutes=30))
    group.start(19_003)
    restarted_at = clock_at(start, epoch)
    gap = finished_runs(database_url, stopped_at, restarted_at, stopped_at)
    wait_for_clock(start, epoch, restarted_at + timedelta(minutes=11))
    after = finished_runs(database_url, restarted_at, clock_at(start, epoch), restarted_at + timedelta(minutes=5))

    # The missed slots fold into the first run after the restart; what follows is on schedule again.
    (_, status, trigger, coalesced), *rest = gap
    assert trigger == RunTrigger.catch_up, gap
    assert status == RunStatus.succeeded
    assert coalesced >= 5
    assert {trigger for _, _, trigger, _ in rest + after} == {RunTrigger.schedule}
