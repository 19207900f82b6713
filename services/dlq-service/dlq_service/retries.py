"""Retrying dead letters: one entry at a time (a double click publishes once), or a bulk redrive whose
selection is fixed when requested and which runs in the background at a bounded rate, cancellable."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Mapping
from contextlib import suppress
from datetime import datetime
from typing import Annotated, Any

from faststream.rabbit import RabbitExchange
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy import Uuid, any_, bindparam, case, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import SQLModel, col

from dlq_service.dead_letters import NOT_STORED, ORIGINAL_PROPERTIES
from dlq_service.queries import EntryNotFound, EntryState, Filters, selected, selected_ids, utc_time
from dlq_service.redrive_lease import RedriveLease
from dlq_service.settings import Settings
from dlq_service.signing import RetrySigner
from libs import audit
from libs.db.tables import (
    DeadLetter,
    DeadLetterReason,
    DeadLetterRetry,
    DeadLetterStatus,
    Redrive,
    RedriveItem,
    RedriveItemState,
    RedriveStatus,
)
from libs.logging import get_logger
from libs.messaging import headers as h
from libs.messaging.publisher import Publisher, PublishFailed
from libs.messaging.topology import TOPOLOGY, Topology
from libs.web.limits import JsonInt, fits_column

log = get_logger("dlq_service.retries")
MAX_REDRIVE = 100_000
CLAIM_EVERY_S = 2.0
"""How often each replica looks for a running redrive nobody drives: a lease freed by a dead holder is taken over
within this (plus the time PostgreSQL takes to end a vanished holder's session, see redrive_lease)."""
SEND_TIMEOUT_S = 10.0
"""A send (and a replica's drain of the one in progress at shutdown) that takes longer gives the lease up."""
# Bookkeeping of earlier failures, parking and retries is dropped: the retried message starts over as a first
# delivery, and carries only the mark of this retry.
_NOT_SENT_BACK = frozenset({h.DLQ_ENTRY, h.DLQ_RETRY, h.DLQ_SIGNATURE, h.PARKED_ERROR, h.PARKED_AT,
                            h.PARKED_ATTEMPTS, ORIGINAL_PROPERTIES, NOT_STORED})  # fmt: skip


class EntryNotRetryable(Exception):
    """The entry is already being retried or is resolved."""


class NotInTopology(EntryNotRetryable):
    """The entry's queue is not one of the topology's work queues: there is nowhere it may be sent back to."""


class RedriveNotFound(Exception):
    pass


NoNul = StringConstraints(pattern=r"^[^\x00]*$")
"""PostgreSQL text cannot hold NUL: a value with one is a 400, not a failed statement."""
UtcTime = Annotated[datetime | None, AfterValidator(utc_time)]
Queue = Annotated[str, NoNul, fits_column(col(DeadLetter.queue_name))]
ErrorType = Annotated[str, NoNul, fits_column(col(DeadLetter.error_type))]
Fingerprint = Annotated[str, NoNul, fits_column(col(DeadLetter.fingerprint))]


def _json_boolean(value: object) -> object:
    # Litestar validates with strict=False, which overrides a field's own Strict(): 1 or "true" is not a yes.
    if not isinstance(value, bool):
        raise ValueError("must be a JSON boolean")
    return value


JsonBool = Annotated[bool, BeforeValidator(_json_boolean)]


class FilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: Queue | None = None
    reason: DeadLetterReason | None = None
    error_type: ErrorType | None = None
    fingerprint: Fingerprint | None = None
    failed_from: UtcTime = None
    failed_to: UtcTime = None
    q: Annotated[str | None, NoNul] = Field(
        None,
        max_length=200,
        description="Free text, selecting as the list's `q` does: entries having every word whole, or, when no entry "
        "of the filtered list has them, the entries containing them as substrings.",
    )

    def filters(self) -> Filters:
        return Filters(queue=self.queue, reason=self.reason, error_type=self.error_type, fingerprint=self.fingerprint,
                       failed_from=self.failed_from, failed_to=self.failed_to, text=self.q)  # fmt: skip


class GroupSelection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: Queue
    fingerprint: Fingerprint


class RedriveSelection(BaseModel):
    """Which failed entries a redrive sends: by id, one group, or a filter. Kept with the redrive as asked."""

    model_config = ConfigDict(extra="forbid")
    ids: list[uuid.UUID] | None = Field(None, max_length=10_000)
    group: GroupSelection | None = None
    filter: FilterBody | None = None


class BulkRetry(RedriveSelection):
    # `true` is not 1 message per second, and 1 is not a dry run.
    dry_run: JsonBool = False
    rate_per_second: Annotated[JsonInt, Field(ge=1, le=10_000)] | None = None

    @model_validator(mode="after")
    def _one_selection(self) -> BulkRetry:
        if sum(part is not None for part in (self.ids, self.group, self.filter)) != 1:
            raise ValueError("give exactly one of ids, group or filter")
        return self

    def selection(self) -> dict[str, Any]:
        """What was asked for, as the redrive keeps it."""
        return self.model_dump(include=set(RedriveSelection.model_fields), exclude_none=True, mode="json")


class RedriveStarted(SQLModel):
    redrive_id: uuid.UUID | None
    selected: int
    dry_run: bool
    rate_per_second: int


class RedriveProgress(SQLModel):
    id: uuid.UUID
    status: RedriveStatus
    selected: int
    sent: int
    failed: int
    skipped: int
    rate_per_second: int
    selection: RedriveSelection
    requested_by: str
    created_at: datetime
    finished_at: datetime | None


class RedriveState(SQLModel):
    id: uuid.UUID
    status: RedriveStatus


def retry_headers(stored: Mapping[str, Any], entry_id: uuid.UUID, retry_id: int, signature: str) -> dict[str, Any]:
    carried = {
        key: value
        for key, value in stored.items()
        if not key.startswith("x-") and not h.is_failure_header(key) and key not in _NOT_SENT_BACK
    }
    return carried | {h.DLQ_ENTRY: str(entry_id), h.DLQ_RETRY: retry_id, h.DLQ_SIGNATURE: signature}


def retry_destination(queue_name: str, topology: Topology = TOPOLOGY) -> tuple[str, str]:
    """Back to the queue it failed in, as the topology reaches it, whatever the message said about its exchange
    or routing key. Raises NotInTopology for a queue the topology does not declare."""
    queue = topology.find_work_queue(queue_name)
    if queue is None:
        raise NotInTopology(
            f"queue {queue_name!r} is not a work queue of the topology: the entry can be inspected and resolved, "
            "not retried"
        )
    return queue.redelivery


def redrive_rate(asked: int | None, default: int, maximum: int) -> int:
    return min(asked or default, maximum)


def next_send_at(scheduled: float, interval: float, now: float) -> float:
    """Evenly spaced sends; a late send does not make the next ones hurry to catch up."""
    return max(scheduled + interval, now)


_START_RETRY = (
    update(DeadLetter)
    .where(col(DeadLetter.id) == bindparam("entry_id"), col(DeadLetter.status) == DeadLetterStatus.failed)
    .values(status=DeadLetterStatus.retrying)
    .returning(
        col(DeadLetter.raw_body),
        col(DeadLetter.headers),
        col(DeadLetter.queue_name),
        col(DeadLetter.message_id),
        col(DeadLetter.correlation_id),
        col(DeadLetter.message_type),
        col(DeadLetter.content_type),
    )
)
_STATUS = select(col(DeadLetter.status)).where(col(DeadLetter.id) == bindparam("entry_id"))
_ADD_RETRY = insert(DeadLetterRetry).returning(col(DeadLetterRetry.id))
_FAILED_BY_ID = (
    select(col(DeadLetter.id))
    .where(
        col(DeadLetter.id) == any_(bindparam("ids", type_=ARRAY(Uuid))),
        col(DeadLetter.status) == DeadLetterStatus.failed,
    )
    .order_by(col(DeadLetter.created_at))
)
_ADD_REDRIVE = insert(Redrive).returning(col(Redrive.id))
_SELECTION = (
    func.unnest(bindparam("entry_ids", type_=ARRAY(Uuid)))
    .table_valued("entry_id", with_ordinality="position")
    .render_derived("selection")
)
_ADD_ITEMS = insert(RedriveItem).from_select(
    ["redrive_id", "position", "entry_id"],
    select(bindparam("new_redrive_id", type_=Uuid), _SELECTION.c.position, _SELECTION.c.entry_id),
)
_PROGRESS = select(*selected(Redrive, RedriveProgress)).where(col(Redrive.id) == bindparam("redrive_id"))
_CANCEL = (
    update(Redrive)
    .where(col(Redrive.id) == bindparam("redrive_id"))
    .values(
        status=case((col(Redrive.status) == RedriveStatus.running, RedriveStatus.cancelled), else_=col(Redrive.status)),
        finished_at=func.coalesce(col(Redrive.finished_at), func.now()),
    )
    .returning(col(Redrive.status))
)
_RUNNING = select(col(Redrive.id)).where(col(Redrive.status) == RedriveStatus.running)
_RATE = select(col(Redrive.rate_per_second), col(Redrive.requested_by)).where(
    col(Redrive.id) == bindparam("redrive_id")
)
_REDRIVE_STATUS = select(col(Redrive.status)).where(col(Redrive.id) == bindparam("redrive_id"))
_NEXT_ITEM = (
    select(col(RedriveItem.position), col(RedriveItem.entry_id))
    .where(col(RedriveItem.redrive_id) == bindparam("redrive_id"), col(RedriveItem.state) == RedriveItemState.pending)
    .order_by(col(RedriveItem.position))
    .limit(1)
)
_MARK_ITEM = (
    update(RedriveItem)
    .where(
        col(RedriveItem.redrive_id) == bindparam("item_redrive_id"),
        col(RedriveItem.position) == bindparam("item_position"),
    )
    .values(state=bindparam("state"))
)
_COUNT = {
    state: update(Redrive).where(col(Redrive.id) == bindparam("redrive_id")).values({counter: col(counter) + 1})
    for state, counter in (
        (RedriveItemState.sent, Redrive.sent),
        (RedriveItemState.failed, Redrive.failed),
        (RedriveItemState.skipped, Redrive.skipped),
    )
}
_COMPLETE = (
    update(Redrive)
    .where(col(Redrive.id) == bindparam("redrive_id"), col(Redrive.status) == RedriveStatus.running)
    .values(status=RedriveStatus.completed, finished_at=func.now())
)


async def retry_entry(
    engine: AsyncEngine,
    publisher: Publisher,
    signer: RetrySigner,
    entry_id: uuid.UUID,
    actor: str,
    redrive_id: uuid.UUID | None = None,
) -> EntryState:
    """Flip failed -> retrying, republish signed with confirm, commit. A publish failure rolls the flip back.

    Raises EntryNotFound, EntryNotRetryable (already retrying or resolved; NotInTopology) or PublishFailed."""
    async with engine.begin() as connection:
        return await retry_in(connection, publisher, signer, entry_id, actor, redrive_id)


async def retry_in(
    connection: AsyncConnection,
    publisher: Publisher,
    signer: RetrySigner,
    entry_id: uuid.UUID,
    actor: str,
    redrive_id: uuid.UUID | None,
) -> EntryState:
    """`retry_entry` inside the caller's transaction, which commits it (or rolls the flip back)."""
    entry = (await connection.execute(_START_RETRY, {"entry_id": entry_id})).first()
    if entry is None:
        status = await connection.scalar(_STATUS, {"entry_id": entry_id})
        if status is None:
            raise EntryNotFound(f"dead letter {entry_id} not found")
        raise EntryNotRetryable(f"entry is {status}")
    exchange, routing_key = retry_destination(entry.queue_name)
    added = await connection.execute(
        _ADD_RETRY, {"entry_id": entry_id, "redrive_id": redrive_id, "requested_by": actor}
    )
    retry_id: int = added.scalar_one()
    await publisher.publish_raw(
        bytes(entry.raw_body),
        exchange=RabbitExchange(exchange, declare=False) if exchange else None,
        routing_key=routing_key,
        message_id=entry.message_id,
        correlation_id=entry.correlation_id,
        message_type=entry.message_type,
        content_type=entry.content_type or "application/json",
        headers=retry_headers(entry.headers or {}, entry_id, retry_id, signer.sign(entry_id, retry_id)),
    )
    await audit.record(
        connection, actor=actor, action="dlq.job_retried", entity_type="dead_letter", entity_id=str(entry_id),
        metadata={"redrive_id": redrive_id, "queue": entry.queue_name, "retry_id": retry_id},
    )  # fmt: skip
    return EntryState(id=entry_id, status=DeadLetterStatus.retrying)


async def _selected(connection: AsyncConnection, request: BulkRetry) -> list[uuid.UUID]:
    if request.ids is not None:
        return list((await connection.scalars(_FAILED_BY_ID, {"ids": request.ids})).all())
    if request.group is not None:
        group = Filters(queue=request.group.queue, fingerprint=request.group.fingerprint)
        return await selected_ids(connection, group, MAX_REDRIVE)
    assert request.filter is not None  # the model allows exactly one selection
    return await selected_ids(connection, request.filter.filters(), MAX_REDRIVE)


async def start_redrive(
    engine: AsyncEngine, redriver: Redriver, request: BulkRetry, actor: str, settings: Settings
) -> RedriveStarted:
    """Fixes the selection now (later failures are not swept in); a dry run only counts it."""
    rate = redrive_rate(request.rate_per_second, settings.redrive_default_rate, settings.redrive_max_rate)
    async with engine.connect() as connection:
        ids = await _selected(connection, request)
    if request.dry_run:
        return RedriveStarted(redrive_id=None, selected=len(ids), dry_run=True, rate_per_second=rate)
    redrive_id = await create_redrive(engine, ids, actor, rate, request.selection())
    redriver.start(redrive_id)
    return RedriveStarted(redrive_id=redrive_id, selected=len(ids), dry_run=False, rate_per_second=rate)


async def create_redrive(
    engine: AsyncEngine, entry_ids: list[uuid.UUID], actor: str, rate: int, selection: Mapping[str, Any]
) -> uuid.UUID:
    async with engine.begin() as connection:
        added = await connection.execute(
            _ADD_REDRIVE,
            {"requested_by": actor, "selection": dict(selection), "rate_per_second": rate, "selected": len(entry_ids)},
        )
        redrive_id: uuid.UUID = added.scalar_one()
        if entry_ids:
            await connection.execute(_ADD_ITEMS, {"new_redrive_id": redrive_id, "entry_ids": entry_ids})
        await audit.record(
            connection, actor=actor, action="dlq.redrive_started", entity_type="redrive", entity_id=str(redrive_id),
            metadata={"selected": len(entry_ids), "rate_per_second": rate},
        )  # fmt: skip
    return redrive_id


async def redrive_progress(engine: AsyncEngine, redrive_id: uuid.UUID) -> RedriveProgress:
    async with engine.connect() as connection:
        row = (await connection.execute(_PROGRESS, {"redrive_id": redrive_id})).mappings().first()
    if row is None:
        raise RedriveNotFound(f"redrive {redrive_id} not found")
    return RedriveProgress.model_validate(dict(row))


async def cancel_redrive(engine: AsyncEngine, redrive_id: uuid.UUID, actor: str) -> RedriveState:
    """Stops before the next message; what was sent stays sent. A finished redrive keeps its status."""
    async with engine.begin() as connection:
        status = await connection.scalar(_CANCEL, {"redrive_id": redrive_id})
        if status is None:
            raise RedriveNotFound(f"redrive {redrive_id} not found")
        await audit.record(
            connection, actor=actor, action="dlq.redrive_cancelled", entity_type="redrive", entity_id=str(redrive_id)
        )
    return RedriveState(id=redrive_id, status=status)


class Redriver:
    """Drives bulk redrives, each by exactly one replica at a time: the one holding its lease.

    Every replica looks for running redrives every `claim_every_s` and takes the lease of any nobody holds (a new
    one, one whose driver stopped, died or lost its database session), then sends the redrive's pending items at
    its rate, each send committing with its item's state on the lease's own connection. What was sent is never
    sent again by the next holder; a holder killed between a confirmed publish and its commit leaves that one
    entry unmarked, and the next holder sends it once more (at least once; consumers deduplicate by message id).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        signer: RetrySigner,
        *,
        claim_every_s: float = CLAIM_EVERY_S,
        send_timeout_s: float = SEND_TIMEOUT_S,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.signer = signer
        self.claim_every_s = claim_every_s
        self.send_timeout_s = send_timeout_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self._driving: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._watching: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self, redrive_id: uuid.UUID) -> None:
        """Tries at once for a redrive this replica was asked for; another replica may take it first."""
        self._drive(redrive_id)

    async def resume(self) -> None:
        """From now on, claims every running redrive nobody drives (those left by a stopped replica included)."""
        self._watching = asyncio.create_task(self._watch(), name="redrive-claims")

    async def stop(self) -> None:
        """Lets each redrive finish the send in progress, then gives its lease up for another replica."""
        self._stopping.set()
        running = [*self._driving.values(), *([self._watching] if self._watching else [])]
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=self.send_timeout_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                async with self.engine.connect() as connection:
                    running = (await connection.scalars(_RUNNING)).all()
                for redrive_id in running:
                    self._drive(redrive_id)
            except (SQLAlchemyError, OSError) as error:
                log.warn("dlq.redrive_claims_failed", {"error": str(error)})
            await _pause(self._stopping, self.claim_every_s)

    def _drive(self, redrive_id: uuid.UUID) -> None:
        if redrive_id in self._driving or self._stopping.is_set():
            return
        task = asyncio.create_task(self._claimed(redrive_id), name=f"redrive-{redrive_id}")
        self._driving[redrive_id] = task
        task.add_done_callback(lambda _: self._driving.pop(redrive_id, None))

    async def _claimed(self, redrive_id: uuid.UUID) -> None:
        labels = {"redrive_id": str(redrive_id), "holder": self.holder}
        try:
            lease = await RedriveLease.take(self.engine, redrive_id)
        except (SQLAlchemyError, OSError) as error:
            log.warn("dlq.redrive_lease_not_taken", labels | {"error": str(error)})
            return
        if lease is None:
            return
        log.info("dlq.redrive_lease_taken", labels)
        try:
            await self._run(lease)
        except (SQLAlchemyError, OSError, TimeoutError) as error:
            # The session (and with it the lease) is gone or unusable: whoever takes the lease next continues.
            log.warn("dlq.redrive_lease_lost", labels | {"error": str(error) or type(error).__name__})
        finally:
            await lease.give_up()
            log.info("dlq.redrive_lease_given_up", labels)

    async def _run(self, lease: RedriveLease) -> None:
        loop = asyncio.get_running_loop()
        connection = lease.connection
        ids = {"redrive_id": lease.redrive_id}
        async with connection.begin():
            redrive = (await connection.execute(_RATE, ids)).one()
        interval = 1.0 / redrive.rate_per_second
        next_at = loop.time()
        while True:
            if self._stopping.is_set():
                return
            async with connection.begin():
                status = await connection.scalar(_REDRIVE_STATUS, ids)
                item = (await connection.execute(_NEXT_ITEM, ids)).first()
            if status != RedriveStatus.running:
                return
            if item is None:
                break
            if await _pause(self._stopping, next_at - loop.time()):
                return
            next_at = next_send_at(next_at, interval, loop.time())
            async with asyncio.timeout(self.send_timeout_s):
                state = await self._send(
                    connection, lease.redrive_id, item.position, item.entry_id, redrive.requested_by
                )
            log.debug("dlq.redrive_sent", {"redrive_id": str(lease.redrive_id), "entry_id": str(item.entry_id),
                                           "state": state.value, "holder": self.holder})  # fmt: skip
        async with connection.begin():
            await connection.execute(_COMPLETE, ids)
        log.info("dlq.redrive_completed", {"redrive_id": str(lease.redrive_id), "holder": self.holder})

    async def _send(
        self, connection: AsyncConnection, redrive_id: uuid.UUID, position: int, entry_id: uuid.UUID, actor: str
    ) -> RedriveItemState:
        """One item: its send and its state commit together, so a new holder never sends a marked item again."""
        try:
            async with connection.begin():
                await retry_in(connection, self.publisher, self.signer, entry_id, actor, redrive_id)
                await _mark(connection, redrive_id, position, RedriveItemState.sent)
            return RedriveItemState.sent
        except (EntryNotRetryable, EntryNotFound):
            state = RedriveItemState.skipped
        except PublishFailed as error:
            log.error("dlq.redrive_publish_failed", error, {"redrive_id": str(redrive_id), "entry_id": str(entry_id)})
            state = RedriveItemState.failed
        async with connection.begin():
            await _mark(connection, redrive_id, position, state)
        return state


async def _mark(connection: AsyncConnection, redrive_id: uuid.UUID, position: int, state: RedriveItemState) -> None:
    await connection.execute(_COUNT[state], {"redrive_id": redrive_id})
    await connection.execute(_MARK_ITEM, {"item_redrive_id": redrive_id, "item_position": position, "state": state})


async def _pause(stopping: asyncio.Event, seconds: float) -> bool:
    """Waits `seconds` unless the replica stops first; True when it does."""
    if seconds > 0:
        with suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)
    return stopping.is_set()
