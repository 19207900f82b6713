"""Persisting dead letters: one row per failed message, updated (not duplicated) when a retry fails again.

Idempotent: each dead letter has a dedupe key; a redelivered one finds its event row and changes nothing. A
message that says it is a retry of an entry updates that entry only when it carries the dlq-service's signature
for a retry of it still in flight; otherwise it is a new entry of its own. This is the hot path, so its
statements are built once, here, and executed with parameters.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from dataclasses import dataclass

from sqlalchemy import Text, bindparam, cast, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from dlq_service.dead_letters import DeadLetterMessage, RetryLink
from dlq_service.signing import RetrySigner
from libs.db.tables import DeadLetter, DeadLetterEvent, DeadLetterRetry, DeadLetterStatus, RetryOutcome
from libs.logging import get_logger
from libs.messaging.wire import printable

log = get_logger("dlq_service.capture")


class CaptureOutcome(enum.StrEnum):
    new = "new"
    failed_again = "failed_again"
    duplicate = "duplicate"


@dataclass(frozen=True)
class Captured:
    entry_id: uuid.UUID | None
    outcome: CaptureOutcome
    link_refused: bool = False
    """The message named an entry without a valid signature for a retry in flight: it became its own entry."""


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
# A bound name in an UPDATE must not be a column name of its table: SQLAlchemy would take it for a value to SET.
IN_FLIGHT = exists().where(
    col(DeadLetterRetry.id) == bindparam("link_retry_id"),
    col(DeadLetterRetry.entry_id) == bindparam("link_entry_id"),
    col(DeadLetterRetry.outcome) == RetryOutcome.sent,
)
"""The retry a message names was sent for that entry and has no outcome yet."""
SETTLE_RETRY = (
    update(DeadLetterRetry)
    .where(
        col(DeadLetterRetry.id) == bindparam("link_retry_id"),
        col(DeadLetterRetry.entry_id) == bindparam("link_entry_id"),
        col(DeadLetterRetry.outcome) == RetryOutcome.sent,
    )
    .values(outcome=bindparam("outcome"), outcome_at=func.now())
)
_FAILED_AGAIN = (
    update(DeadLetter)
    .where(col(DeadLetter.id) == bindparam("link_entry_id"), IN_FLIGHT)
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
_PROBE = text("SELECT 1")


class _AlreadyRecorded(Exception):
    """Raised inside the transaction so that everything it wrote is rolled back."""


def link_params(link: RetryLink) -> dict[str, object]:
    return {"link_entry_id": link.entry_id, "link_retry_id": link.retry_id}


async def _event(connection: AsyncConnection, entry_id: uuid.UUID, letter: DeadLetterMessage) -> None:
    """The dead letter's event row; when a concurrent delivery recorded it first, undo this transaction."""
    if await connection.scalar(_EVENT, letter.event_values(entry_id)) is None:
        raise _AlreadyRecorded


async def _failed_again(connection: AsyncConnection, link: RetryLink, letter: DeadLetterMessage) -> bool:
    updated = await connection.scalar(
        _FAILED_AGAIN,
        {**link_params(link), "failed_at": letter.last_failed_at, "error_type": letter.error_type,
         "error_message": letter.error_message, "stack_trace": letter.stack_trace, "attempts": letter.attempts,
         "reason": letter.reason},
    )  # fmt: skip
    if updated is None:
        return False
    await _event(connection, link.entry_id, letter)
    await connection.execute(SETTLE_RETRY, {**link_params(link), "outcome": RetryOutcome.failed_again})
    return True


def verified_link(letter: DeadLetterMessage, signer: RetrySigner) -> RetryLink | None:
    link = letter.retry_link
    if link is None or not signer.verify(link.entry_id, link.retry_id, link.signature):
        return None
    return link


async def capture(engine: AsyncEngine, letter: DeadLetterMessage, signer: RetrySigner) -> Captured:
    """Records the dead letter in one transaction; the caller acks only after this returns."""
    link = verified_link(letter, signer)
    refused = letter.retry_link is not None and link is None
    try:
        async with engine.begin() as connection:
            if await connection.scalar(_SEEN, {"dedupe_key": letter.dedupe_key}) is not None:
                return Captured(None, CaptureOutcome.duplicate)
            if link is not None and await _failed_again(connection, link, letter):
                return Captured(link.entry_id, CaptureOutcome.failed_again)
            entry_id = uuid.uuid4()
            await connection.execute(_NEW_ENTRY, letter.entry_values(entry_id))
            await _event(connection, entry_id, letter)
            return Captured(entry_id, CaptureOutcome.new, link_refused=refused)
    except _AlreadyRecorded:
        # Another delivery (or replica) recorded the same dead letter between our check and our insert.
        return Captured(None, CaptureOutcome.duplicate)


async def database_reachable(engine: AsyncEngine, timeout_s: float) -> bool:
    """Tells an outage (hand the letter back, unchanged, later) from a letter PostgreSQL refuses (try less of it,
    then park it): after a failure, can a fresh statement run at all?"""
    try:
        async with asyncio.timeout(timeout_s), engine.connect() as connection:
            await connection.execute(_PROBE)
    except Exception:  # whatever stops a `SELECT 1` (refused, reset, pool timeout, shutdown) is an outage
        return False
    return True


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot run a statement at all: an outage, not the letter's fault."""


@dataclass(frozen=True)
class Refused:
    """PostgreSQL refused the letter every time, the last time with the least of it: it has to be parked."""

    error: str
    attempts: int


async def record(
    engine: AsyncEngine, letter: DeadLetterMessage, signer: RetrySigner, *, attempts: int, probe_timeout_s: float
) -> Captured | Refused:
    """Bounded: `attempts` tries, the last one stripped of headers, payload and stack. Raises DatabaseUnavailable
    as soon as a failure turns out to be an outage, so the letter is handed back rather than counted against."""
    error: Exception | None = None
    for attempt in range(1, attempts + 1):
        tried = letter if attempt < attempts else letter.stripped(f"refused by PostgreSQL: {_describe(error)}")
        try:
            return await capture(engine, tried, signer)
        except Exception as failure:  # anything: the probe below tells an outage from a letter it refuses
            if not await database_reachable(engine, probe_timeout_s):
                raise DatabaseUnavailable(_describe(failure)) from failure
            error = failure
            log.warn("dead_letter.refused", {"attempt": attempt, "queue": letter.queue, "error": _describe(failure)})
    return Refused(_describe(error), attempts)


def _describe(error: BaseException | None) -> str:
    return "" if error is None else printable(f"{type(error).__name__}: {error}")[:2_000]
