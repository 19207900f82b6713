"""Lead intake: a source's lead is stored once, then lead.submitted is published until the broker confirms it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict
from sqlalchemy import String, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from ingest_gateway.accounts import AuthenticatedSource
from libs.contracts import Contact, LeadSubmitted, SafeText, ZipCode
from libs.db.tables import Lead, LeadStatus
from libs.logging import get_logger
from libs.messaging.publisher import Publisher, PublishFailed
from libs.web import fits_column

log = get_logger("ingest_gateway.leads")


class LeadSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: Annotated[SafeText, fits_column(Lead.external_id)]
    category: Annotated[SafeText, fits_column(Lead.category)]
    zip: ZipCode
    contact: Contact


@dataclass(frozen=True)
class Submitted:
    lead_id: uuid.UUID
    status: LeadStatus
    # False when an earlier request (same external id or Idempotency-Key) made this lead.
    created: bool


# The hot path's statements, built once: one idempotent insert, and only on a repeat the lookup of the first.
_LEAD = (col(Lead.id), col(Lead.status), col(Lead.published_at))
_STORE = insert(Lead).on_conflict_do_nothing().returning(*_LEAD)
_IDEMPOTENCY_KEY = bindparam("idempotency_key", type_=String)
_EARLIER = select(*_LEAD).where(
    col(Lead.source_id) == bindparam("source_id"),
    or_(
        col(Lead.external_id) == bindparam("external_id"),
        and_(_IDEMPOTENCY_KEY.is_not(None), col(Lead.idempotency_key) == _IDEMPOTENCY_KEY),
    ),
)
_MARK_PUBLISHED = (
    update(Lead)
    .where(col(Lead.id) == bindparam("lead"), col(Lead.published_at).is_(None))
    .values(published_at=func.now())
)


async def submit(
    engine: AsyncEngine,
    publisher: Publisher,
    source: AuthenticatedSource,
    lead: LeadSubmission,
    idempotency_key: str | None,
) -> Submitted:
    """Idempotent on the source's external id (or Idempotency-Key): a repeat answers like the first, and
    publishes only if the first did not get its event confirmed (PublishFailed then, and retried next time)."""
    async with engine.begin() as connection:
        stored, published_at = await _store(connection, source, lead, idempotency_key)
    if published_at is None:
        event = LeadSubmitted(
            lead_id=stored.lead_id, external_id=lead.external_id, category=lead.category, zip=lead.zip
        )
        try:
            await publisher.publish(event, message_id=f"lead.submitted:{stored.lead_id}")
        except PublishFailed as error:
            log.error("lead.publish_failed", error, {"lead_id": str(stored.lead_id)})
            raise
        async with engine.begin() as connection:
            await connection.execute(_MARK_PUBLISHED, {"lead": stored.lead_id})
    return stored


async def _store(
    connection: AsyncConnection, source: AuthenticatedSource, lead: LeadSubmission, idempotency_key: str | None
) -> tuple[Submitted, datetime | None]:
    inserted = (
        await connection.execute(
            _STORE,
            {
                "source_id": source.id,
                "external_id": lead.external_id,
                "idempotency_key": idempotency_key,
                "category": lead.category,
                "zip": lead.zip,
                "contact": lead.contact.model_dump(),
            },
        )
    ).first()
    if inserted is not None:
        return Submitted(inserted.id, inserted.status, created=True), inserted.published_at
    earlier = (
        await connection.execute(
            _EARLIER,
            {"source_id": source.id, "external_id": lead.external_id, "idempotency_key": idempotency_key},
        )
    ).one()  # the conflicting row is committed before ON CONFLICT gives way
    return Submitted(earlier.id, earlier.status, created=False), earlier.published_at
