"""Persisting dead letters: one row per failed message, updated (not duplicated) when a retry fails again.

Idempotent: each dead letter has a dedupe key; a redelivered one finds its event row and changes nothing.
This is the hot path, so its statements are built once, here, and executed with parameters.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

from sqlalchemy import Text, bindparam, cast, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from dlq_service.dead_letters import DeadLetterMessage
from dlq_service.retries import SETTLE_LAST_RETRY
from libs.db.tables import DeadLetter, DeadLetterEvent, DeadLetterStatus, RetryOutcome


class CaptureOutcome(enum.StrEnum):
    new = "new"
    failed_again = "failed_again"
    duplicate = "duplicate"


@dataclass(frozen=True)
class Captured:
    entry_id: uuid.UUID | None
    outcome: CaptureOutcome


_SEEN = select(col(DeadLetterEvent.id)).where(col(DeadLetterEvent.dedupe_key) == bindparam("dedupe_key"))
_EVENT = (
    insert(DeadLetterEvent)
    .on_conflict_do_nothing(index_elements=[col(DeadLetterEvent.dedupe_key)])
    .returning(col(DeadLetterEvent.id))
)
# JSON goes in as orjson's text: it writes NaN as null where the stdlib encoder writes a NaN that jsonb refuses.
_NEW_ENTRY = insert(DeadLetter).values(
    payload=cast(bindparam("payload", type_=Text), JSONB), headers=cast(bindparam("headers", type_=Text), JSONB)
)
_FAILED_AGAIN = (
    update(DeadLetter)
    .where(col(DeadLetter.id) == bindparam("entry_id"))
    .values(
        retry_count=col(DeadLetter.retry_count) + 1,
        status=DeadLetterStatus.failed,
        resolved=False,
        resolved_at=None,
        resolved_by=None,
        resolution=None,
        failed_at=bindparam("failed_at"),
        last_failed_at=bindparam("failed_at"),
        error_type=bindparam("error_type"),
        error_message=bindparam("error_message"),
        stack_trace=bindparam("stack_trace"),
        attempts=bindparam("attempts"),
        reason=bindparam("reason"),
    )
    .returning(col(DeadLetter.id))
)


class _AlreadyRecorded(Exception):
    """Raised inside the transaction so that everything it wrote is rolled back."""


async def _event(connection: AsyncConnection, entry_id: uuid.UUID, letter: DeadLetterMessage) -> None:
    """The dead letter's event row; when a concurrent delivery recorded it first, undo this transaction."""
    if await connection.scalar(_EVENT, letter.event_values(entry_id)) is None:
        raise _AlreadyRecorded


async def _failed_again(connection: AsyncConnection, entry_id: uuid.UUID, letter: DeadLetterMessage) -> bool:
    updated = await connection.scalar(
        _FAILED_AGAIN,
        {"entry_id": entry_id, "failed_at": letter.last_failed_at, "error_type": letter.error_type,
         "error_message": letter.error_message, "stack_trace": letter.stack_trace, "attempts": letter.attempts,
         "reason": letter.reason},
    )  # fmt: skip
    if updated is None:
        return False
    await _event(connection, entry_id, letter)
    await connection.execute(SETTLE_LAST_RETRY, {"retried_entry_id": entry_id, "outcome": RetryOutcome.failed_again})
    return True


async def capture(engine: AsyncEngine, letter: DeadLetterMessage) -> Captured:
    """Records the dead letter in one transaction; the caller acks only after this returns."""
    try:
        async with engine.begin() as connection:
            if await connection.scalar(_SEEN, {"dedupe_key": letter.dedupe_key}) is not None:
                return Captured(None, CaptureOutcome.duplicate)
            retried = letter.retried_entry
            if retried is not None and await _failed_again(connection, retried, letter):
                return Captured(retried, CaptureOutcome.failed_again)
            entry_id = uuid.uuid4()
            await connection.execute(_NEW_ENTRY, letter.entry_values(entry_id))
            await _event(connection, entry_id, letter)
            return Captured(entry_id, CaptureOutcome.new)
    except (IntegrityError, _AlreadyRecorded):
        # Another delivery (or replica) recorded the same dead letter between our check and our insert.
        return Captured(None, CaptureOutcome.duplicate)
