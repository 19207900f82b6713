"""Lead intake: a source's lead is stored once, with its lead.submitted staged in the outbox by the same
statement, so a stored lead always has its event on the way (the relay publishes it)."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from opentelemetry.metrics import Counter
from pydantic import BaseModel, ConfigDict
from sqlalchemy import LargeBinary, String, Text, Uuid, and_, bindparam, cast, column, func, literal, or_, select
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from ingest_gateway.accounts import AuthenticatedSource, SourceKeys
from ingest_gateway.metrics import GatewayMetrics
from ingest_gateway.outbox import Relay, staged
from libs.contracts import Contact, LeadSubmitted, SafeText, ZipCode
from libs.db import retry_on_disconnect
from libs.db.tables import Lead, LeadStatus
from libs.db.tables.outbox import OutboxMessage
from libs.messaging.publisher import Envelope
from libs.web import fits_column
from libs.web.app import retry_later

MAX_BATCH = 100
"""Leads one statement stores at most: at 64 connections a batch holds what arrived during the one before it."""


class LeadSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: Annotated[SafeText, fits_column(Lead.external_id)]
    category: Annotated[SafeText, fits_column(Lead.category)]
    zip: ZipCode
    contact: Contact


@dataclass
class _Waiting:
    values: dict[str, Any]
    outcome: asyncio.Future[Submitted]
    expiry: asyncio.TimerHandle | None = None
    """Withdraws it at `wait_s` unless a batch took it first (a batch taken is waited for whatever the wait, as a
    statement already sent would be)."""


class GroupCommit:
    """Stores the leads of concurrent requests together: a lead waits only for the batch being written when it
    arrived, then goes with every lead that arrived meanwhile, up to `max_batch`, in one statement (group commit:
    no timer, so a lone lead is written at once, and under load one commit carries many leads where each lead
    was its own commit, flushed on its own). Each request gets its own outcome: a new lead, a repeat (answered
    like the first), or, for a batch PostgreSQL refuses, what its lead alone gets. A batch that fails because
    the database is away or busy fails every lead in it with that error (503 with Retry-After).

    A lead not yet taken into a batch after `wait_s` is withdrawn with TimeoutError (the same 503 as a pool
    checkout that timed out); one taken waits for its batch, whose statement is bounded by the pool and the
    database's own timeouts. A request that goes away before its lead is taken is not written.

    `stored`: the counter of new leads, added to once per batch (once per lead, it was 4% of a request's CPU)."""

    def __init__(self, engine: AsyncEngine, *, max_batch: int, wait_s: float, stored: Counter | None = None) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.stored = stored
        self._waiting: deque[_Waiting] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, values: dict[str, Any]) -> Submitted:
        # A timer handle per lead, not asyncio.timeout and shield: this runs once per request.
        loop = asyncio.get_running_loop()
        waiting = _Waiting(values, loop.create_future())
        waiting.expiry = loop.call_later(self.wait_s, self._withdraw, waiting)
        self._waiting.append(waiting)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting(), name="lead-group-commit")
        return await waiting.outcome

    def _withdraw(self, waiting: _Waiting) -> None:
        self._waiting.remove(waiting)
        if not waiting.outcome.done():
            waiting.outcome.set_exception(TimeoutError(f"not taken into a batch within {self.wait_s:g}s"))

    def _take(self) -> list[_Waiting]:
        batch: list[_Waiting] = []
        while self._waiting and len(batch) < self.max_batch:
            waiting = self._waiting.popleft()
            if waiting.expiry is not None:
                waiting.expiry.cancel()
            if not waiting.outcome.done():  # its request went away
                batch.append(waiting)
        return batch

    async def _write_waiting(self) -> None:
        await asyncio.sleep(0)  # requests already received get to join the first batch
        while self._waiting:
            batch = self._take()
            if not batch:
                continue
            try:
                outcomes = await self._write([waiting.values for waiting in batch])
            except BaseException as error:  # each request answers it (503); a cancelled writer leaves none waiting
                for waiting in batch:
                    if not waiting.outcome.done():
                        waiting.outcome.set_exception(error)
                if not isinstance(error, Exception):
                    raise
                continue
            if self.stored is not None:  # before any request is answered
                self.stored.add(sum(isinstance(outcome, Submitted) and outcome.created for outcome in outcomes))
            for waiting, outcome in zip(batch, outcomes, strict=True):
                if waiting.outcome.done():
                    continue
                if isinstance(outcome, BaseException):
                    waiting.outcome.set_exception(outcome)
                else:
                    waiting.outcome.set_result(outcome)

    async def _write(self, batch: list[dict[str, Any]]) -> Sequence[Submitted | BaseException]:
        try:
            return await store_together(self.engine, batch)
        except Exception as error:
            if retry_later(error):
                raise
        # PostgreSQL refused the statement for one of its leads (a source deleted meanwhile, say): alone, each
        # lead gets its own answer.
        outcomes: list[Submitted | BaseException] = []
        for values in batch:
            try:
                outcomes.append(await _alone(self.engine, values))
            except Exception as error:
                outcomes.append(error)
        return outcomes


@dataclass(frozen=True)
class Submitted:
    lead_id: uuid.UUID
    status: LeadStatus
    # False when an earlier request (same external id or Idempotency-Key) made this lead.
    created: bool


@dataclass(frozen=True)
class Intake:
    """What a lead submission needs of the process (built once): where leads are stored (together with the
    other requests' leads), the sources' keys, the relay to wake and the counter of leads taken."""

    commits: GroupCommit
    keys: SourceKeys
    relay: Relay
    metrics: GatewayMetrics

    async def submit(self, source: AuthenticatedSource, lead: LeadSubmission, idempotency_key: str | None) -> Submitted:
        """`submit`, in one statement with the leads of the requests beside it."""
        return await self.commits.submit(values(source, lead, idempotency_key))


# The hot path's statements, built once. A new lead is one statement, its own transaction: the insert, and the
# outbox row staged only when the insert happened (a repeat's event was staged with the first). A repeat then
# reads the first, which committed before ON CONFLICT gave way.
_LEAD = (col(Lead.id), col(Lead.status))
_OUTBOX_COLUMNS = ["message_id", "message_type", "correlation_id", "body", "traceparent"]
_STORED = (
    insert(Lead)
    .values(
        id=bindparam("lead_id"),
        source_id=bindparam("source_id"),
        external_id=bindparam("external_id"),
        idempotency_key=bindparam("idempotency_key", type_=String),
        category=bindparam("category"),
        zip=bindparam("zip"),
        contact=cast(bindparam("contact", type_=Text), JSONB),
    )
    .on_conflict_do_nothing()
    .returning(*_LEAD)
    .cte("stored")
)
_STAGED = (
    insert(OutboxMessage)
    .from_select(
        _OUTBOX_COLUMNS,
        select(
            bindparam("message_id", type_=String),
            literal(LeadSubmitted.message_type),
            bindparam("correlation_id", type_=String),
            bindparam("body", type_=LargeBinary),
            bindparam("traceparent", type_=String),
        ).select_from(_STORED),
        include_defaults=False,
    )
    .cte("staged")
)
_STORE = select(_STORED.c.id, _STORED.c.status).add_cte(_STAGED)

# The same for a batch: its leads as arrays, one element per lead, unnested in their order of arrival, so the
# outbox rows (and the events the relay publishes in their order) follow it. A lead ON CONFLICT skips, an
# earlier one or one of the same batch, stages nothing.
_TYPES: dict[str, Any] = {
    "lead_id": Uuid, "source_id": Uuid, "external_id": String, "idempotency_key": String, "category": String,
    "zip": String, "contact": Text, "message_id": String, "correlation_id": String, "body": LargeBinary,
    "traceparent": String,
}  # fmt: skip
_BATCH = (
    func.unnest(*(bindparam(name, type_=ARRAY(type_)) for name, type_ in _TYPES.items()))
    .table_valued(*(column(name, type_) for name, type_ in _TYPES.items()), with_ordinality="position")
    .render_derived(name="submitted")
)
_STORED_ALL = (
    insert(Lead)
    .from_select(
        ["id", "source_id", "external_id", "idempotency_key", "category", "zip", "contact"],
        select(
            _BATCH.c.lead_id, _BATCH.c.source_id, _BATCH.c.external_id, _BATCH.c.idempotency_key,
            _BATCH.c.category, _BATCH.c.zip, cast(_BATCH.c.contact, JSONB),
        ).order_by(_BATCH.c.position),
        include_defaults=False,
    )
    .on_conflict_do_nothing()
    .returning(*_LEAD)
    .cte("stored")
)  # fmt: skip
_STAGED_ALL = (
    insert(OutboxMessage)
    .from_select(
        _OUTBOX_COLUMNS,
        select(
            _BATCH.c.message_id, literal(LeadSubmitted.message_type), _BATCH.c.correlation_id, _BATCH.c.body,
            _BATCH.c.traceparent,
        )
        .join(_STORED_ALL, _STORED_ALL.c.id == _BATCH.c.lead_id)
        .order_by(_BATCH.c.position),
        include_defaults=False,
    )
    .cte("staged")
)  # fmt: skip
_STORE_ALL = select(_STORED_ALL.c.id, _STORED_ALL.c.status).add_cte(_STAGED_ALL)

_IDEMPOTENCY_KEY = bindparam("idempotency_key", type_=String)
_EARLIER = select(*_LEAD).where(
    col(Lead.source_id) == bindparam("source_id"),
    or_(
        col(Lead.external_id) == bindparam("external_id"),
        and_(_IDEMPOTENCY_KEY.is_not(None), col(Lead.idempotency_key) == _IDEMPOTENCY_KEY),
    ),
)


def values(source: AuthenticatedSource, lead: LeadSubmission, idempotency_key: str | None) -> dict[str, Any]:
    """A submission as the statements' values, with a new lead id and its lead.submitted."""
    lead_id = uuid.uuid4()
    # Not validated again: the submission's fields were, as the same types (SafeText, ZipCode) with the columns'
    # lengths on top (1% of the request's CPU).
    event = LeadSubmitted.model_construct(
        lead_id=lead_id, external_id=lead.external_id, category=lead.category, zip=lead.zip
    )
    return {
        "lead_id": lead_id,
        "source_id": source.id,
        "external_id": lead.external_id,
        "idempotency_key": idempotency_key,
        "category": lead.category,
        "zip": lead.zip,
        "contact": lead.contact.model_dump_json(),
        **staged(Envelope.of(event, f"lead.submitted:{lead_id}")),
    }


async def submit(
    engine: AsyncEngine, source: AuthenticatedSource, lead: LeadSubmission, idempotency_key: str | None
) -> Submitted:
    """Idempotent on the source's external id (or Idempotency-Key): a repeat answers like the first and stages
    nothing. Returns once the lead and its event are committed; a lost connection is retried (the statement is
    idempotent), any other database error raised."""
    return await _alone(engine, values(source, lead, idempotency_key))


async def _alone(engine: AsyncEngine, lead: dict[str, Any]) -> Submitted:
    async def store() -> Submitted:
        async with engine.connect() as connection:
            # One statement is its own transaction: no BEGIN and COMMIT round trips around it.
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            inserted = (await connection.execute(_STORE, lead)).first()
            if inserted is not None:
                return Submitted(inserted.id, inserted.status, created=True)
            return await _earlier(connection, lead)

    return await retry_on_disconnect(store)


async def store_together(engine: AsyncEngine, leads: Sequence[dict[str, Any]]) -> list[Submitted]:
    """`submit` for several leads in one statement (one commit), each outcome in the leads' order: a lead that
    repeats an earlier one, or one before it in `leads`, answers like that one. A lost connection is retried
    (idempotent, as `submit`); any other database error raised, nothing stored."""
    arrays = {name: [lead[name] for lead in leads] for name in _TYPES}

    async def store() -> list[Submitted]:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            inserted = {row.id: row.status for row in await connection.execute(_STORE_ALL, arrays)}
            return [
                Submitted(lead["lead_id"], inserted[lead["lead_id"]], created=True)
                if lead["lead_id"] in inserted
                else await _earlier(connection, lead)
                for lead in leads
            ]

    return await retry_on_disconnect(store)


async def _earlier(connection: AsyncConnection, lead: dict[str, Any]) -> Submitted:
    keys = {name: lead[name] for name in ("source_id", "external_id", "idempotency_key")}
    earlier = (await connection.execute(_EARLIER, keys)).one()
    return Submitted(earlier.id, earlier.status, created=False)
