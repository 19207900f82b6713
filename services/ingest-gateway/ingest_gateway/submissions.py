"""Lead intake: a source's lead is stored once, with its lead.submitted staged in the outbox by the same
statement, so a stored lead always has its event on the way (the relay publishes it)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict
from sqlalchemy import LargeBinary, String, and_, bindparam, literal, or_, select
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncEngine
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


class LeadSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: Annotated[SafeText, fits_column(Lead.external_id)]
    category: Annotated[SafeText, fits_column(Lead.category)]
    zip: ZipCode
    contact: Contact


class Slots:
    """At most `size` leads at the database at once, let in in their order of arrival, each waiting at most
    `wait_s` (then TimeoutError, which the app answers 503 with Retry-After, as a pool checkout that timed out).

    `size` is the pool's: under more requests at once than that, the pool opens overflow connections and closes
    them again on their return whenever its own queue is full (py-spy at 64 connections: opening and closing
    them was 8% of the gateway's CPU, besides a PostgreSQL backend started and authenticated for each), and its
    queue lets a new request take a connection ahead of one already waiting."""

    def __init__(self, size: int, wait_s: float) -> None:
        self.wait_s = wait_s
        self._free = asyncio.Semaphore(size)

    async def __aenter__(self) -> None:
        async with asyncio.timeout(self.wait_s):
            await self._free.acquire()

    async def __aexit__(self, *_: object) -> None:
        self._free.release()


@dataclass(frozen=True)
class Intake:
    """What a lead submission needs of the process (built once): where leads are stored and how many at once,
    the sources' keys, the relay to wake and the counter of leads taken."""

    engine: AsyncEngine
    slots: Slots
    keys: SourceKeys
    relay: Relay
    metrics: GatewayMetrics

    async def submit(self, source: AuthenticatedSource, lead: LeadSubmission, idempotency_key: str | None) -> Submitted:
        """`submit` in turn with the other requests of this process."""
        async with self.slots:
            return await submit(self.engine, source, lead, idempotency_key)


@dataclass(frozen=True)
class Submitted:
    lead_id: uuid.UUID
    status: LeadStatus
    # False when an earlier request (same external id or Idempotency-Key) made this lead.
    created: bool


# The hot path's statements, built once. A new lead is one statement, its own transaction: the insert, and the
# outbox row staged only when the insert happened (a repeat's event was staged with the first). A repeat then
# reads the first, which committed before ON CONFLICT gave way.
_LEAD = (col(Lead.id), col(Lead.status))
_STORED = (
    insert(Lead)
    .values(
        id=bindparam("lead_id"),
        source_id=bindparam("source_id"),
        external_id=bindparam("external_id"),
        idempotency_key=bindparam("idempotency_key", type_=String),
        category=bindparam("category"),
        zip=bindparam("zip"),
        contact=bindparam("contact", type_=JSONB),
    )
    .on_conflict_do_nothing()
    .returning(*_LEAD)
    .cte("stored")
)
_STAGED = (
    insert(OutboxMessage)
    .from_select(
        ["message_id", "message_type", "correlation_id", "body", "traceparent"],
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
_IDEMPOTENCY_KEY = bindparam("idempotency_key", type_=String)
_EARLIER = select(*_LEAD).where(
    col(Lead.source_id) == bindparam("source_id"),
    or_(
        col(Lead.external_id) == bindparam("external_id"),
        and_(_IDEMPOTENCY_KEY.is_not(None), col(Lead.idempotency_key) == _IDEMPOTENCY_KEY),
    ),
)


async def submit(
    engine: AsyncEngine, source: AuthenticatedSource, lead: LeadSubmission, idempotency_key: str | None
) -> Submitted:
    """Idempotent on the source's external id (or Idempotency-Key): a repeat answers like the first and stages
    nothing. Returns once the lead and its event are committed; a lost connection is retried (the statement is
    idempotent), any other database error raised."""
    lead_id = uuid.uuid4()
    event = LeadSubmitted(lead_id=lead_id, external_id=lead.external_id, category=lead.category, zip=lead.zip)
    values = {
        "lead_id": lead_id,
        "source_id": source.id,
        "external_id": lead.external_id,
        "idempotency_key": idempotency_key,
        "category": lead.category,
        "zip": lead.zip,
        "contact": lead.contact.model_dump(),
        **staged(Envelope.of(event, f"lead.submitted:{lead_id}")),
    }

    async def store() -> Submitted:
        async with engine.connect() as connection:
            # One statement is its own transaction: no BEGIN and COMMIT round trips around it.
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            inserted = (await connection.execute(_STORE, values)).first()
            if inserted is not None:
                return Submitted(inserted.id, inserted.status, created=True)
            earlier = (
                await connection.execute(
                    _EARLIER,
                    {"source_id": source.id, "external_id": lead.external_id, "idempotency_key": idempotency_key},
                )
            ).one()
            return Submitted(earlier.id, earlier.status, created=False)

    return await retry_on_disconnect(store)
