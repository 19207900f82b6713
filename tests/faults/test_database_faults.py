"""PostgreSQL stopped, its sessions killed, a table locked: work waits (or is retried) instead of being burnt
into the DLQ, and nothing is lost or charged twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid

import aio_pika
import httpx
import pytest
from aio_pika.abc import FieldValue
from sqlalchemy import func, select, text
from sqlmodel import col

from libs.db.tables import DeadLetter, Lead, LeadStatus
from libs.messaging import headers as h
from libs.messaging.topology import DEAD_LETTER_EXCHANGE
from tests.faults.conftest import Scenario
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


DEAD_LETTERS = 50
DLQ_OUTAGE_S = 30
TRIES_ALLOWED = 30
"""Recording tries during the outage: each held letter once, plus one trial per probe cycle, not one per second
per consumer slot."""


async def dead_letters_since(scenario: Scenario) -> int:
    async with scenario.engine.connect() as connection:
        count = await connection.scalar(select(func.count()).where(col(DeadLetter.created_at) >= scenario.since))
    return int(count or 0)


async def paused_but_alive(url: str, deadline: float) -> bool:
    """Readiness 503 naming the paused consumer while liveness answers 200, seen before the deadline."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                ready = await client.get("/health/ready")
                live = await client.get("/health/live")
                consumers = ready.json()["checks"]["consumers"]
                if ready.status_code == 503 and consumers["status"] == "down" and live.status_code == 200:
                    return True
            await asyncio.sleep(0.5)
    return False


async def undecided_leads(scenario: Scenario, source_id: object) -> int:
    async with scenario.engine.connect() as connection:
        count = await connection.scalar(
            select(func.count()).where(
                col(Lead.source_id) == source_id,
                col(Lead.status).not_in([LeadStatus.distributed, LeadStatus.unassigned]),
            )
        )
    return int(count or 0)


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
        worker = scenario.stack.start("distribution-worker")
        paused_seen = await paused_but_alive(worker.url(""), deadline=stopped + outage_s - 5)
        await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - stopped)))
    finally:
        await asyncio.to_thread(scenario.postgres.start)
    returned = time.monotonic()
    assert paused_seen, "the worker's readiness never said its consumer was paused (liveness kept 200)"
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
    await scenario.verify(workload)
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


async def publish_dead_letters(url: str, message_ids: list[str]) -> None:
    """As the consumer policy dead-letters a message: on the dead-letter exchange, with the failure headers."""
    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(DEAD_LETTER_EXCHANGE)
    for message_id in message_ids:
        headers: dict[str, FieldValue] = {h.REASON: "error", h.ERROR_CLASS: "permanent", h.ERROR_TYPE: "SchemaMismatch",
                   h.ERROR_MESSAGE: "a planted dead letter", h.ORIGINAL_QUEUE: "email", h.ATTEMPTS: 1}  # fmt: skip
        await exchange.publish(
            aio_pika.Message(b"{}", message_id=message_id, type="email.send", headers=headers, delivery_mode=2),
            routing_key="email",
        )
    await connection.close()


async def recorded(scenario: Scenario, message_ids: list[str]) -> int:
    async with scenario.engine.connect() as connection:
        count = await connection.scalar(select(func.count()).where(col(DeadLetter.message_id).in_(message_ids)))
    return int(count or 0)


async def test_dead_letters_arriving_while_postgres_is_down_wait_without_a_hot_loop(scenario: Scenario) -> None:
    dlq_log = scenario.stack.running["dlq-service"].log
    tries_before = dlq_log.read_text(errors="replace").count('"event":"dead_letter.not_recorded"')
    message_ids = [f"planted-{uuid.uuid4()}" for _ in range(DEAD_LETTERS)]
    await asyncio.to_thread(scenario.postgres.stop, "immediate")
    try:
        await publish_dead_letters(scenario.rabbitmq.url(), message_ids)
        await asyncio.sleep(DLQ_OUTAGE_S)
    finally:
        await asyncio.to_thread(scenario.postgres.start)
    tries = dlq_log.read_text(errors="replace").count('"event":"dead_letter.not_recorded"') - tries_before
    async with asyncio.timeout(RESUMED_WITHIN_S):
        while await recorded(scenario, message_ids) < DEAD_LETTERS:
            await asyncio.sleep(0.5)
    scenario.figures.update(recording_tries_while_down=tries)
    print(f"\n{scenario.name}: {tries} recording tries during {DLQ_OUTAGE_S}s, {DEAD_LETTERS} dead letters recorded")
    assert await recorded(scenario, message_ids) == DEAD_LETTERS
    assert tries <= TRIES_ALLOWED
