"""Dead letters arriving together are recorded together: once each, in one transaction, with the failure group's
count kept by the database's triggers as entries arrive and resolve; each batch one span and one report."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags
from pydantic import SecretStr
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from dlq_service.capture import CAPTURE_SPAN, CaptureBatcher, Captured, CaptureOutcome, capture, capture_batch
from dlq_service.dead_letters import DeadLetterMessage, read_dead_letter
from dlq_service.signing import RetrySigner
from libs.db.tables import DeadLetter, DeadLetterEvent, DeadLetterGroupCount, DeadLetterStatus
from libs.messaging import headers as h

SIGNER = RetrySigner(SecretStr("test-only-retry-signing-key-0123456789abcdef"))


@pytest.fixture
def queue() -> str:
    """Each test's letters come from a queue of their own, so what it counts is only what it captured."""
    return f"test-batch-{uuid.uuid4().hex[:10]}"


def letter(
    queue: str, message_id: str, error: str = "550 mailbox unavailable", correlation_id: str | None = None
) -> DeadLetterMessage:
    headers = {h.REASON: "error", h.ORIGINAL_QUEUE: queue, h.ERROR_TYPE: "SmtpRefused", h.ERROR_MESSAGE: error,
               h.ATTEMPTS: 4, h.SERVICE: "email-worker", h.LAST_FAILURE_AT: "2026-11-30T11:59:00+00:00"}  # fmt: skip
    return read_dead_letter(
        headers, b'{"to": "ada@example.com"}', message_id=message_id, correlation_id=correlation_id or message_id,
        message_type="send_email", content_type="application/json", now=datetime.now(UTC),
    )  # fmt: skip


def batcher(engine: AsyncEngine) -> CaptureBatcher:
    return CaptureBatcher(engine, SIGNER, max_batch=50, attempts=3, probe_timeout_s=2)


async def entries(engine: AsyncEngine, queue: str) -> int:
    async with engine.connect() as connection:
        count = await connection.scalar(select(func.count()).where(col(DeadLetter.queue_name) == queue))
    return int(count or 0)


async def unresolved_in_groups(engine: AsyncEngine, queue: str) -> int:
    async with engine.connect() as connection:
        total = await connection.scalar(
            select(func.sum(col(DeadLetterGroupCount.unresolved))).where(col(DeadLetterGroupCount.queue_name) == queue)
        )
    return int(total or 0)


async def test_letters_arriving_together_are_each_recorded_once(engine: AsyncEngine, queue: str) -> None:
    capture = batcher(engine)  # at most 50 a batch: three batches
    outcomes = await asyncio.gather(*(capture.record(letter(queue, f"m-{n}")) for n in range(123)))
    assert all(isinstance(outcome, Captured) and outcome.outcome is CaptureOutcome.new for outcome in outcomes)
    assert await entries(engine, queue) == 123
    async with engine.connect() as connection:
        events = await connection.scalar(
            select(func.count())
            .select_from(DeadLetterEvent)
            .join(DeadLetter)
            .where(col(DeadLetter.queue_name) == queue)
        )
    assert events == 123


async def test_the_same_dead_letter_twice_in_one_batch_is_one_entry(engine: AsyncEngine, queue: str) -> None:
    capture = batcher(engine)
    first, again = await asyncio.gather(capture.record(letter(queue, "m-1")), capture.record(letter(queue, "m-1")))
    assert [first.outcome, again.outcome] == [CaptureOutcome.new, CaptureOutcome.duplicate]  # type: ignore[union-attr]
    assert await entries(engine, queue) == 1


async def test_a_dead_letter_recorded_before_is_a_duplicate_in_a_later_batch(engine: AsyncEngine, queue: str) -> None:
    await batcher(engine).record(letter(queue, "m-1"))
    outcomes = await asyncio.gather(*(batcher(engine).record(letter(queue, name)) for name in ("m-1", "m-2")))
    assert [outcome.outcome for outcome in outcomes] == [CaptureOutcome.duplicate, CaptureOutcome.new]  # type: ignore[union-attr]
    assert await entries(engine, queue) == 2


async def waiting_for_a_lock(engine: AsyncEngine) -> bool:
    async with engine.connect() as connection:
        waiting = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


async def test_a_dead_letter_a_replica_records_meanwhile_is_a_duplicate_and_the_rest_of_the_batch_new(
    engine: AsyncEngine, queue: str
) -> None:
    first = letter(queue, "m-1")
    async with engine.begin() as replica:  # has written m-1, not committed yet
        entry_id = uuid.uuid4()
        await replica.execute(insert(DeadLetter).values(id=entry_id, queue_name=queue, failed_at=first.last_failed_at))
        await replica.execute(
            insert(DeadLetterEvent).values(
                entry_id=entry_id, dedupe_key=first.dedupe_key, reason=first.reason, failed_at=first.last_failed_at
            )
        )
        recording = asyncio.create_task(capture_batch(engine, [letter(queue, "m-1"), letter(queue, "m-2")]))
        deadline = asyncio.get_running_loop().time() + 10
        while not await waiting_for_a_lock(engine):  # the batch waits for the replica's m-1 to commit or not
            assert asyncio.get_running_loop().time() < deadline, "the batch never waited for the replica's row"
            await asyncio.sleep(0.02)
    outcomes = await recording
    assert [outcome.outcome for outcome in outcomes] == [CaptureOutcome.duplicate, CaptureOutcome.new]
    assert await entries(engine, queue) == 2


async def test_the_group_count_follows_captures_resolutions_and_deletions(engine: AsyncEngine, queue: str) -> None:
    capture = batcher(engine)
    outcomes = await asyncio.gather(*(capture.record(letter(queue, f"m-{n}")) for n in range(5)))
    other = await capture.record(letter(queue, "other", error="connection refused by the relay"))
    assert await unresolved_in_groups(engine, queue) == 6
    async with engine.connect() as connection:
        groups = await connection.scalar(select(func.count()).where(col(DeadLetterGroupCount.queue_name) == queue))
    assert groups == 2
    resolving = [outcome.entry_id for outcome in [*outcomes[:2], other] if isinstance(outcome, Captured)]
    async with engine.begin() as connection:  # as every path that resolves does, whichever service it is
        await connection.execute(
            update(DeadLetter)
            .where(col(DeadLetter.id).in_(resolving))
            .values(status=DeadLetterStatus.resolved, resolved=True)
        )
    assert await unresolved_in_groups(engine, queue) == 3
    async with engine.begin() as connection:
        await connection.execute(delete(DeadLetter).where(col(DeadLetter.queue_name) == queue))
    assert await unresolved_in_groups(engine, queue) == 0


async def stored(engine: AsyncEngine, entry_id: uuid.UUID | None) -> dict[str, object]:
    """An entry's columns, but those that differ for every entry (its id, when it was written)."""
    async with engine.connect() as connection:
        row = (await connection.execute(select(DeadLetter.__table__).where(col(DeadLetter.id) == entry_id))).one()  # type: ignore[attr-defined]
    return {name: value for name, value in row._mapping.items() if name not in {"id", "created_at"}}


async def test_a_batch_stores_each_letter_as_it_is_stored_alone(engine: AsyncEngine, queue: str) -> None:
    alone = await capture(engine, letter(queue, "m-1"), SIGNER)
    as_alone = await stored(engine, alone.entry_id)
    async with engine.begin() as connection:  # its event with it: the same letter is new again
        await connection.execute(delete(DeadLetter).where(col(DeadLetter.id) == alone.entry_id))
    batch = await capture_batch(engine, [letter(queue, "m-0"), letter(queue, "m-1")])
    assert [outcome.outcome for outcome in batch] == [CaptureOutcome.new, CaptureOutcome.new]
    assert await stored(engine, batch[1].entry_id) == as_alone


def trace_of(number: int) -> SpanContext:
    return SpanContext(trace_id=number, span_id=number, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))


async def test_a_batch_is_one_span_linked_to_the_trace_of_each_letter(engine: AsyncEngine, queue: str) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    capture = CaptureBatcher(
        engine, SIGNER, max_batch=50, attempts=3, probe_timeout_s=2, tracer=tracer_provider.get_tracer("test")
    )  # fmt: skip
    await asyncio.gather(*(capture.record(letter(queue, f"m-{n}"), trace_of(n + 1)) for n in range(3)))
    batches = [span for span in exporter.get_finished_spans() if span.name == CAPTURE_SPAN]
    assert len(batches) == 1
    assert sorted(link.context.trace_id for link in batches[0].links) == [1, 2, 3]
    assert (batches[0].attributes or {})["messaging.batch.message_count"] == 3


async def test_a_committed_batch_is_reported_once_with_every_letter_and_its_outcome(
    engine: AsyncEngine, queue: str
) -> None:
    reports: list[Sequence[tuple[DeadLetterMessage, Captured]]] = []
    capture = CaptureBatcher(engine, SIGNER, max_batch=50, attempts=3, probe_timeout_s=2, recorded=reports.append)
    await asyncio.gather(*(capture.record(letter(queue, message_id)) for message_id in ("a", "b", "a")))
    assert len(reports) == 1
    assert [(one.message_id, outcome.outcome) for one, outcome in reports[0]] == [
        ("a", CaptureOutcome.new), ("b", CaptureOutcome.new), ("a", CaptureOutcome.duplicate),
    ]  # fmt: skip
