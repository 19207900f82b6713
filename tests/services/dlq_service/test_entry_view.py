"""One entry's detail, on real PostgreSQL: everything captured with its failures and retries in order, and the
viewing audited by the statement that reads it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from dlq_service.queries import EntryNotFound, view
from libs.db.tables import AuditEntry, DeadLetter, DeadLetterEvent, DeadLetterReason, DeadLetterRetry, RetryOutcome

FAILED_AT = datetime(2026, 11, 1, tzinfo=UTC)
ACTOR = "5f0c2b8e-0d3c-4f4e-9a51-8c1e2f3a4b5c"


async def stored_entry(engine: AsyncEngine, failures: int, retries: int) -> uuid.UUID:
    entry_id = uuid.uuid4()
    async with engine.begin() as connection:
        await connection.execute(insert(DeadLetter).values(
            id=entry_id, queue_name=f"test-view-{entry_id.hex[:8]}", error_message="boom", failed_at=FAILED_AT,
            payload={"email": "ada@example.com"}, raw_body=b'{"email": "ada@example.com"}',
        ))  # fmt: skip
        for number in range(failures):
            await connection.execute(insert(DeadLetterEvent).values(
                entry_id=entry_id, dedupe_key=uuid.uuid4().hex, reason=DeadLetterReason.error,
                error_message=f"failure {number}", failed_at=FAILED_AT + timedelta(minutes=number),
            ))  # fmt: skip
        for number in range(retries):
            await connection.execute(insert(DeadLetterRetry).values(entry_id=entry_id, requested_by=f"admin {number}"))
    return entry_id


async def views_audited(engine: AsyncEngine, entry_id: uuid.UUID) -> list[str]:
    async with engine.connect() as connection:
        actors = await connection.scalars(
            select(col(AuditEntry.actor)).where(
                col(AuditEntry.action) == "dlq.entry_viewed", col(AuditEntry.entity_id) == str(entry_id)
            )
        )
        return list(actors)


async def test_the_detail_shows_every_failure_and_retry_in_order_and_the_whole_payload(engine: AsyncEngine) -> None:
    entry_id = await stored_entry(engine, failures=3, retries=2)
    entry = await view(engine, entry_id, ACTOR)
    assert entry.id == entry_id
    assert entry.payload == {"email": "ada@example.com"}
    assert [failure.error_message for failure in entry.failures] == ["failure 0", "failure 1", "failure 2"]
    assert [failure.failed_at for failure in entry.failures] == [FAILED_AT + timedelta(minutes=n) for n in range(3)]
    assert [(retry.requested_by, retry.outcome) for retry in entry.retries] == [
        ("admin 0", RetryOutcome.sent),
        ("admin 1", RetryOutcome.sent),
    ]


async def test_an_entry_without_failures_or_retries_shows_empty_lists(engine: AsyncEngine) -> None:
    entry = await view(engine, await stored_entry(engine, failures=0, retries=0), ACTOR)
    assert (entry.failures, entry.retries) == ([], [])


async def test_each_viewing_is_audited_once_with_its_viewer(engine: AsyncEngine) -> None:
    entry_id = await stored_entry(engine, failures=1, retries=0)
    await view(engine, entry_id, ACTOR)
    await view(engine, entry_id, ACTOR)
    assert await views_audited(engine, entry_id) == [ACTOR, ACTOR]


async def test_an_unknown_entry_is_not_found_and_nothing_is_audited(engine: AsyncEngine) -> None:
    missing = uuid.uuid4()
    with pytest.raises(EntryNotFound):
        await view(engine, missing, ACTOR)
    assert await views_audited(engine, missing) == []
