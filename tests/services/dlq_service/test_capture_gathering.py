"""Batches are gathered from the letters on their way, up to a full one; two batches holding the same letters at
once (replicas) never deadlock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from dlq_service.capture import CaptureBatcher, Captured, CaptureOutcome, Refused, capture_batch
from dlq_service.dead_letters import DeadLetterMessage, read_dead_letter
from dlq_service.signing import RetrySigner
from libs.db.tables import DeadLetter, DeadLetterEvent
from libs.messaging import headers as h

SIGNER = RetrySigner(SecretStr("test-only-retry-signing-key-0123456789abcdef"))


@pytest.fixture
def queue() -> str:
    """Each test's letters come from a queue of their own, so what it counts is only what it captured."""
    return f"test-gathering-{uuid.uuid4().hex[:10]}"


def letter(queue: str, message_id: str) -> DeadLetterMessage:
    headers = {h.REASON: "error", h.ORIGINAL_QUEUE: queue, h.ERROR_TYPE: "SmtpRefused",
               h.ERROR_MESSAGE: "550 mailbox unavailable", h.ATTEMPTS: 4, h.SERVICE: "email-worker",
               h.LAST_FAILURE_AT: "2026-11-30T11:59:00+00:00"}  # fmt: skip
    return read_dead_letter(
        headers, b'{"to": "ada@example.com"}', message_id=message_id, correlation_id=message_id,
        message_type="send_email", content_type="application/json", now=datetime.now(UTC),
    )  # fmt: skip


async def entries(engine: AsyncEngine, queue: str) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(select(func.count()).where(col(DeadLetter.queue_name) == queue))
    return int(count or 0)


async def arriving_after(turns: int, capture: CaptureBatcher, one: DeadLetterMessage) -> Captured | Refused:
    for _ in range(turns):
        await asyncio.sleep(0)
    return await capture.record(one)


async def test_letters_arriving_turn_after_turn_join_the_batch_being_gathered(engine: AsyncEngine, queue: str) -> None:
    reports: list[Sequence[tuple[DeadLetterMessage, Captured]]] = []
    capture = CaptureBatcher(engine, SIGNER, max_batch=50, attempts=3, probe_timeout_s=2, recorded=reports.append)
    await asyncio.gather(*(arriving_after(turn, capture, letter(queue, f"m-{turn}")) for turn in range(6)))
    assert [len(report) for report in reports] == [6]


async def test_a_full_batch_is_written_without_waiting_for_more(engine: AsyncEngine, queue: str) -> None:
    reports: list[Sequence[tuple[DeadLetterMessage, Captured]]] = []
    capture = CaptureBatcher(engine, SIGNER, max_batch=4, attempts=3, probe_timeout_s=2, recorded=reports.append)
    await asyncio.gather(*(arriving_after(turn, capture, letter(queue, f"m-{turn}")) for turn in range(6)))
    assert [len(report) for report in reports] == [4, 2]


async def statements_waiting_for_a_lock(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        waiting = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return int(waiting or 0)


async def test_the_same_letters_in_two_batches_at_once_in_opposite_orders_are_each_recorded_once(
    engine: AsyncEngine, queue: str
) -> None:
    letters = [letter(queue, f"m-{n}") for n in range(200)]
    middle = letters[100]
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    async with engine.connect() as replica:  # holds the middle letter, uncommitted, until both batches reach it
        entry_id = uuid.uuid4()
        await replica.execute(insert(DeadLetter).values(id=entry_id, queue_name=queue, failed_at=middle.last_failed_at))
        await replica.execute(
            insert(DeadLetterEvent).values(
                entry_id=entry_id, dedupe_key=middle.dedupe_key, reason=middle.reason, failed_at=middle.last_failed_at
            )
        )
        forward = asyncio.create_task(capture_batch(autocommit, letters))
        backward = asyncio.create_task(capture_batch(autocommit, letters[::-1]))
        deadline = asyncio.get_running_loop().time() + 10
        while await statements_waiting_for_a_lock(engine) < 2:
            assert asyncio.get_running_loop().time() < deadline, "the two batches never both waited"
            await asyncio.sleep(0.02)
        await replica.rollback()
    # Each statement takes the keys in one order (the letters' dedupe keys sorted), so the one behind waits for
    # the other's commit; taken in the letters' orders, each would hold a key the other waits for: a deadlock.
    for one, other in zip(await forward, (await backward)[::-1], strict=True):
        assert sorted([one.outcome, other.outcome]) == [CaptureOutcome.duplicate, CaptureOutcome.new]
    assert await entries(engine, queue) == 200
