"""Persisting dead letters: one row per failed message, updated (not duplicated) when a retry fails again.

Idempotent: each dead letter has a dedupe key; a redelivered one finds its event row and changes nothing. A
message that says it is a retry of an entry updates that entry only when it carries the dlq-service's signature
for a retry of it still in flight; otherwise it is a new entry of its own. Letters arriving together are
recorded together (`CaptureBatcher`: one statement inserting into both tables, its own transaction); one the
batch cannot take is recorded alone. This is the hot path, so its statements are built once, here, and executed
with parameters.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Link, NoOpTracer, Span, SpanContext, SpanKind, Tracer
from sqlalchemy import (
    CTE,
    ColumnElement,
    Insert,
    String,
    Table,
    Text,
    bindparam,
    cast,
    exists,
    func,
    select,
    text,
    update,
)
from sqlalchemy import column as sql_column
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import TypeDecorator
from sqlmodel import col

from dlq_service.dead_letters import DeadLetterMessage, RetryLink
from dlq_service.signing import RetrySigner
from libs.db import autocommitting
from libs.db.ids import time_ordered_uuid
from libs.db.tables import DeadLetter, DeadLetterEvent, DeadLetterRetry, DeadLetterStatus, RetryOutcome
from libs.logging import get_logger
from libs.messaging.topology import DLQ_QUEUE
from libs.messaging.wire import printable

log = get_logger("dlq_service.capture")
CAPTURE_SPAN = "dlq capture"


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
# A batch as one statement whatever its size, in autocommit: one round trip, no BEGIN and COMMIT. Each column's
# values are one array (`unnest`), so the same SQL serves every batch size and is prepared once per connection (a
# multi-row VALUES list is new SQL for each size). The events go in first, ON CONFLICT DO NOTHING, and an entry is
# inserted only for an event that went in: a letter recorded before (or by a replica meanwhile: the conflict waits
# for its commit) adds nothing, and the statement says which entries it inserted. Foreign keys are checked at the
# statement's end, once both tables hold their rows; dead_letter_queue's statement-level triggers count the
# batch's groups once.
_BATCH_COLUMNS = (
    "id", "queue_name", "job_id", "payload", "error_message", "stack_trace", "attempts", "original_exchange",
    "original_routing_key", "message_id", "correlation_id", "headers", "raw_body", "reason", "error_type",
    "fingerprint", "service", "first_failed_at", "last_failed_at", "message_type", "content_type",
)  # fmt: skip
"""A new entry's columns the letter gives (its `failed_at` is its `last_failed_at`); each is a parameter, one array
of the batch's values, named after it (`batch_<column>`)."""


def _array_of(column: ColumnElement[Any]) -> ARRAY[Any]:
    """The array type a column's values are sent as: jsonb as text (cast back), enums and bounded text as
    unbounded text (a cast to VARCHAR(n) would cut a value too long where the column refuses it)."""
    stored = column.type.impl if isinstance(column.type, TypeDecorator) else column.type
    return ARRAY(Text() if isinstance(stored, JSONB) else String() if isinstance(stored, String) else stored)


def _batch_rows() -> CTE:
    """The batch's rows, one array parameter per column plus the letters' dedupe keys."""
    table: Table = DeadLetter.__table__  # type: ignore[attr-defined]
    arrays = {name: _array_of(table.c[name]) for name in _BATCH_COLUMNS}
    arrays["dedupe_key"] = ARRAY(String())
    rows = func.unnest(*(bindparam(f"batch_{name}", type_=type_) for name, type_ in arrays.items()))
    values = rows.table_valued(*(sql_column(name, type_.item_type) for name, type_ in arrays.items()))
    values = values.render_derived("letters")
    return select(values).cte("batch")


def _record_batch() -> Insert:
    batch = _batch_rows()
    events = (
        insert(DeadLetterEvent)
        .from_select(
            ["entry_id", "dedupe_key", "reason", "error_type", "error_message", "attempts", "failed_at"],
            select(
                batch.c.id,
                batch.c.dedupe_key,
                batch.c.reason,
                batch.c.error_type,
                batch.c.error_message,
                batch.c.attempts,
                batch.c.last_failed_at,
            ),
        )
        .on_conflict_do_nothing(index_elements=[col(DeadLetterEvent.dedupe_key)])
        .returning(col(DeadLetterEvent.entry_id))
        .cte("recorded")
    )
    table: Table = DeadLetter.__table__  # type: ignore[attr-defined]
    values = [
        cast(batch.c[name], JSONB) if isinstance(table.c[name].type, JSONB) else batch.c[name]
        for name in _BATCH_COLUMNS
    ]
    entries = select(*values, batch.c.last_failed_at).where(batch.c.id.in_(select(events.c.entry_id)))
    return (
        insert(DeadLetter)
        .from_select([*_BATCH_COLUMNS, "failed_at"], entries, include_defaults=False)
        .returning(col(DeadLetter.id))
    )


_RECORD_BATCH = _record_batch()


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
            entry_id = time_ordered_uuid()
            await connection.execute(_NEW_ENTRY, letter.entry_values(entry_id))
            await _event(connection, entry_id, letter)
            return Captured(entry_id, CaptureOutcome.new, link_refused=refused)
    except _AlreadyRecorded:
        # Another delivery (or replica) recorded the same dead letter between our check and our insert.
        return Captured(None, CaptureOutcome.duplicate)


async def capture_batch(engine: AsyncEngine, letters: Sequence[DeadLetterMessage]) -> list[Captured]:
    """Letters that name no retry in flight, recorded in one statement (one transaction: on an autocommitting
    `engine`, without a BEGIN and COMMIT round trip around it), each result in the letters' order: a letter seen
    before (earlier in the batch, in the table, or recorded by a replica meanwhile) is a duplicate, every other
    one a new entry."""
    first: dict[str, int] = {}
    for position, letter in enumerate(letters):
        first.setdefault(letter.dedupe_key, position)
    # In dedupe-key order: two statements inserting the same keys at once (replicas, each with a batch)
    # meet them in the same order, so one waits for the other's commit instead of both deadlocking.
    keys = sorted(first)
    entry_ids = {first[key]: time_ordered_uuid() for key in keys}
    rows = [letters[position].entry_values(entry_id) for position, entry_id in entry_ids.items()]
    params = {f"batch_{name}": [row[name] for row in rows] for name in _BATCH_COLUMNS}
    params["batch_dedupe_key"] = keys
    async with engine.begin() as connection:
        inserted = set((await connection.scalars(_RECORD_BATCH, params)).all())
    results: list[Captured] = []
    for position, letter in enumerate(letters):
        entry_id = entry_ids.get(position)
        if entry_id is not None and entry_id in inserted:
            results.append(Captured(entry_id, CaptureOutcome.new, link_refused=letter.retry_link is not None))
        else:
            results.append(Captured(None, CaptureOutcome.duplicate))
    return results


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


GATHER_IDLE_TURNS = 2
"""Turns of the event loop without a new letter after which a batch is written: a delivery read from the socket
reaches the batch a turn or two later (its handler is a task of its own)."""

Recorded = Callable[[Sequence[tuple[DeadLetterMessage, Captured]]], None]
"""Told once per committed batch (a retry that failed again: a batch of one) what it recorded, before the letters
are acked, inside the batch's span: where the counters, the DLQ size and the batch's log line are kept."""


@dataclass(frozen=True)
class _Waiting:
    letter: DeadLetterMessage
    origin: SpanContext | None
    result: asyncio.Future[Captured | Refused]


class CaptureBatcher:
    """Records the letters of concurrent deliveries together: a letter waits only for the batch being written
    when it arrived, then goes with every letter that arrived meanwhile (group commit: no timer, so a lone
    letter is written at once and a busy queue fills its batches). Before a batch is taken, the letters already
    on their way join it: the writer yields to the event loop while letters keep arriving, up to a full batch
    (`_gathered`). A batch PostgreSQL refuses is split: each of its letters is recorded alone by `record`, with
    its own attempts and parking. An outage fails the whole batch with DatabaseUnavailable, logged once per
    batch, not once per letter.

    Each batch is one span (`dlq capture`), linked to the trace each letter came with (`origin`), in place of a
    span per letter."""

    def __init__(
        self,
        engine: AsyncEngine,
        signer: RetrySigner,
        *,
        max_batch: int,
        attempts: int,
        probe_timeout_s: float,
        tracer: Tracer | None = None,
        recorded: Recorded | None = None,
    ) -> None:
        self.engine = engine
        self.autocommit = autocommitting(engine)
        """Where a batch is written: its one statement is its transaction."""
        self.signer = signer
        self.max_batch = max_batch
        self.attempts = attempts
        self.probe_timeout_s = probe_timeout_s
        self.tracer = tracer or NoOpTracer()
        self.recorded = recorded
        self._pending: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, letter: DeadLetterMessage, origin: SpanContext | None = None) -> Captured | Refused:
        """Raises DatabaseUnavailable during an outage (the letter is handed back, uncounted). `origin`: the trace
        the letter arrived in, which the batch's span links to."""
        if letter.retry_link is not None and verified_link(letter, self.signer) is not None:
            # A retry that failed again updates its entry, row-locked: alone, as before.
            with self._span([origin]):
                try:
                    outcome = await record(
                        self.engine, letter, self.signer, attempts=self.attempts, probe_timeout_s=self.probe_timeout_s
                    )
                except DatabaseUnavailable as error:
                    log.error("dead_letter.not_recorded", error, {"letters": 1})
                    raise
                self._report([letter], [outcome])
            return outcome
        result: asyncio.Future[Captured | Refused] = asyncio.get_running_loop().create_future()
        self._pending.append(_Waiting(letter, origin, result))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending(), name="dlq-capture-batches")
        return await result

    async def _gathered(self) -> None:
        """Yields to the event loop until GATHER_IDLE_TURNS turns in a row bring no new letter or a batch is full:
        the deliveries the broker sent as the last batch's acks freed its prefetch join the next batch (without
        it, batches at a million entries averaged 40-55 letters). No timer: a lone letter waits two turns."""
        idle, seen = 0, len(self._pending)
        while idle < GATHER_IDLE_TURNS and len(self._pending) < self.max_batch:
            await asyncio.sleep(0)
            idle, seen = (idle + 1, seen) if len(self._pending) == seen else (0, len(self._pending))

    async def _write_pending(self) -> None:
        while True:
            await self._gathered()
            if not self._pending:
                return
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            letters = [waiting.letter for waiting in batch]
            try:
                with self._span([waiting.origin for waiting in batch]):
                    outcomes = await self._write(letters)
                    self._report(letters, outcomes)
            except Exception as error:  # handed to each letter's handler, which decides (hold or park)
                if isinstance(error, DatabaseUnavailable):
                    log.error("dead_letter.not_recorded", error, {"letters": len(batch)})
                for waiting in batch:
                    if not waiting.result.done():
                        waiting.result.set_exception(error)
                continue
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if not waiting.result.done():
                    waiting.result.set_result(outcome)

    def _span(self, origins: Sequence[SpanContext | None]) -> AbstractContextManager[Span]:
        links = [Link(origin) for origin in origins if origin is not None]
        return self.tracer.start_as_current_span(
            CAPTURE_SPAN, kind=SpanKind.CONSUMER, links=links,
            attributes={"messaging.system": "rabbitmq", "messaging.destination.name": DLQ_QUEUE,
                        "messaging.operation": "process", "messaging.batch.message_count": len(origins)},
        )  # fmt: skip

    def _report(self, letters: Sequence[DeadLetterMessage], outcomes: Sequence[Captured | Refused]) -> None:
        if self.recorded is None:
            return
        captured = [
            (letter, outcome)
            for letter, outcome in zip(letters, outcomes, strict=True)
            if isinstance(outcome, Captured)
        ]
        if captured:
            self.recorded(captured)

    async def _write(self, letters: Sequence[DeadLetterMessage]) -> list[Captured | Refused]:
        try:
            return list(await capture_batch(self.autocommit, letters))
        except Exception as failure:  # the probe tells an outage from a batch PostgreSQL refuses
            if not await database_reachable(self.engine, self.probe_timeout_s):
                raise DatabaseUnavailable(_describe(failure)) from failure
        return [
            await record(self.engine, letter, self.signer, attempts=self.attempts, probe_timeout_s=self.probe_timeout_s)
            for letter in letters
        ]


def _describe(error: BaseException | None) -> str:
    return "" if error is None else printable(f"{type(error).__name__}: {error}")[:2_000]
