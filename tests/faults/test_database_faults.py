"""PostgreSQL stopped, its sessions killed, a table locked: work waits (or is retried) instead of being burnt
into the DLQ, and nothing is lost or charged twice."""

from __future__ import annotations

import asyncio
import inspect
import os
import time

import pytest
from sqlalchemy import func, select, text
from sqlmodel import col

from libs.db.tables import DeadLetter, Lead, LeadStatus
from libs.messaging.consumer import ConsumerPolicy
from tests.faults.conftest import Scenario
from tests.faults.known import MAIL_SENT_AGAIN
from tests.faults.stack import PIPELINE

SERVICE_NAMES = tuple(sorted({role.removesuffix("-2") for role in PIPELINE}))
LOCK_PROVIDERS = text("LOCK TABLE providers IN ACCESS EXCLUSIVE MODE")
# The services' sessions only (each names itself in application_name): the test's own connection survives.
TERMINATE_SERVICE_SESSIONS = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name = ANY(:names)"
)
LOCKED_S = 20
RESUMED_WITHIN_S = 60.0
"""After the database returns: the breaker's longest probe backoff (15 s) plus the backlog's distribution."""


def consumers_pause_for_outages() -> bool:
    """Whether the consumer policy holds a delivery during an outage (libs/messaging/outage.py wired into it)."""
    return "breaker" in inspect.signature(ConsumerPolicy.__init__).parameters


needs_the_pause = pytest.mark.xfail(
    not consumers_pause_for_outages(),
    reason="until the consumer policy calls libs.messaging.outage.Breaker, every delivery handled while PostgreSQL "
    "is down spends its three retries (1 s, 5 s, 30 s) on a database that is not there and is dead-lettered",
    strict=True,
    raises=AssertionError,
)


async def dead_letters_since(scenario: Scenario) -> int:
    async with scenario.engine.connect() as connection:
        count = await connection.scalar(select(func.count()).where(col(DeadLetter.created_at) >= scenario.since))
    return int(count or 0)


async def undecided_leads(scenario: Scenario, source_id: object) -> int:
    async with scenario.engine.connect() as connection:
        count = await connection.scalar(
            select(func.count()).where(
                col(Lead.source_id) == source_id,
                col(Lead.status).not_in([LeadStatus.distributed, LeadStatus.unassigned]),
            )
        )
    return int(count or 0)


@needs_the_pause
@pytest.mark.parametrize(
    "outage_s",
    [
        60,
        pytest.param(
            300,
            marks=pytest.mark.skipif(not os.environ.get("FAULTS_LONG"), reason="five minutes: FAULTS_LONG=1 runs it"),
        ),
    ],
)
async def test_postgres_stopped_while_a_backlog_waits_pauses_consumption_instead_of_dead_lettering(
    scenario: Scenario, outage_s: int
) -> None:
    # The backlog: every lead accepted while no distribution-worker runs.
    await asyncio.to_thread(scenario.stack.down, "distribution-worker")
    workload = await scenario.workload()
    await workload.run_all()
    await asyncio.to_thread(scenario.postgres.stop, "immediate")
    stopped = time.monotonic()
    try:
        # A worker (re)started during the outage meets the backlog and a database that is not there.
        scenario.stack.start("distribution-worker")
        await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - stopped)))
    finally:
        await asyncio.to_thread(scenario.postgres.start)
    returned = time.monotonic()
    # Until every lead is decided, or a dead letter shows the outage was burnt into the DLQ (the checker says so).
    while (
        await undecided_leads(scenario, workload.run.source_id) and time.monotonic() - returned < 3 * RESUMED_WITHIN_S
    ):
        if await dead_letters_since(scenario):
            break
        await asyncio.sleep(0.5)
    scenario.figures["all_distributed_after_return_s"] = round(time.monotonic() - returned, 1)
    await scenario.verify(workload)
    assert scenario.figures["all_distributed_after_return_s"] <= RESUMED_WITHIN_S  # type: ignore[operator]


async def test_application_sessions_terminated_again_and_again(scenario: Scenario) -> None:
    workload = await scenario.workload()
    driving = scenario.drive(workload)
    await workload.accepted_at_least(workload.leads // 4)
    terminated = 0
    for _ in range(10):
        async with scenario.engine.connect() as connection:
            terminated += int(await connection.scalar(TERMINATE_SERVICE_SESSIONS, {"names": list(SERVICE_NAMES)}) or 0)
        await asyncio.sleep(2)
    scenario.figures["sessions_terminated"] = terminated
    await driving
    await scenario.verify(workload, known=MAIL_SENT_AGAIN)
    assert terminated > 0


async def test_a_table_locked_for_twenty_seconds(scenario: Scenario) -> None:
    workload = await scenario.workload()
    driving = scenario.drive(workload)
    await workload.accepted_at_least(workload.leads // 3)
    async with scenario.engine.begin() as connection:
        await connection.execute(LOCK_PROVIDERS)
        await asyncio.sleep(LOCKED_S)
    await driving
    await scenario.verify(workload)
