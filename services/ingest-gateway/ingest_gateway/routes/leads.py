"""Leads: lead sources submit, admins approve or reject. A 202 means the broker confirmed the event."""

from __future__ import annotations

import uuid
from typing import Annotated

import orjson
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, HTTPException, NotFoundException
from litestar.params import Body, FromPath, HeaderParameter
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT, HTTP_503_SERVICE_UNAVAILABLE
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest_gateway.accounts import LeadSource
from ingest_gateway.metrics import GatewayMetrics
from libs import audit
from libs.auth import Principal, require_admin
from libs.contracts import Contact, LeadApproved, LeadSubmitted, SafeText, ZipCode
from libs.logging import get_logger
from libs.messaging.publisher import Publisher, PublishFailed

log = get_logger("ingest_gateway.leads")
BROKER_DOWN = "the message broker did not confirm; nothing was changed, retry later"


class LeadSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: SafeText
    category: SafeText
    zip: ZipCode
    contact: Contact


class LeadAccepted(BaseModel):
    lead_id: FromPath[uuid.UUID]
    status: str


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=1000, pattern=r"^[^\x00]*$")]


def broker_unavailable() -> HTTPException:
    return HTTPException(status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=BROKER_DOWN, headers={"Retry-After": "5"})


async def _store(connection: AsyncConnection, source: LeadSource, data: LeadSubmission, key: str | None) -> tuple:  # type: ignore[type-arg]
    inserted = (
        await connection.execute(
            text(
                "INSERT INTO leads (source_id, external_id, idempotency_key, category, zip, contact) "
                "VALUES (:source, :external, :key, :category, :zip, CAST(:contact AS jsonb)) "
                "ON CONFLICT DO NOTHING RETURNING id, status, published_at"
            ),
            {
                "source": source.id,
                "external": data.external_id,
                "key": key,
                "category": data.category,
                "zip": data.zip,
                "contact": orjson.dumps(data.contact.model_dump()).decode(),
            },
        )
    ).first()
    if inserted is not None:
        return inserted.id, inserted.status, inserted.published_at, True
    existing = (
        await connection.execute(
            text(
                "SELECT id, status, published_at FROM leads WHERE source_id = :source "
                "AND (external_id = :external OR (CAST(:key AS text) IS NOT NULL AND idempotency_key = :key))"
            ),
            {"source": source.id, "external": data.external_id, "key": key},
        )
    ).first()
    assert existing is not None  # the conflicting row is committed before ON CONFLICT gives way
    return existing.id, existing.status, existing.published_at, False


class LeadsController(Controller):
    path = "/api/v1/leads"
    tags = ["leads"]  # noqa: RUF012

    @post("/", status_code=HTTP_202_ACCEPTED, raises=[HTTPException])
    async def submit_lead(
        self,
        data: Annotated[LeadSubmission, Body()],
        lead_source: NamedDependency[LeadSource],
        engine: NamedDependency[AsyncEngine],
        publisher: NamedDependency[Publisher],
        metrics: NamedDependency[GatewayMetrics],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key", max_length=200)] = None,
    ) -> LeadAccepted:
        """Idempotent on the source's external id (or Idempotency-Key): a repeat answers like the first."""
        async with engine.begin() as connection:
            lead_id, status, published_at, first_time = await _store(connection, lead_source, data, idempotency_key)
        if published_at is None:
            event = LeadSubmitted(lead_id=lead_id, external_id=data.external_id, category=data.category, zip=data.zip)
            try:
                await publisher.publish(event, message_id=f"lead.submitted:{lead_id}")
            except PublishFailed as error:
                log.error("lead.publish_failed", error, {"lead_id": str(lead_id)})
                raise broker_unavailable() from None
            async with engine.begin() as connection:
                await connection.execute(
                    text("UPDATE leads SET published_at = now() WHERE id = :id AND published_at IS NULL"),
                    {"id": lead_id},
                )
        if first_time:
            metrics.leads_submitted.add(1)
            log.info("lead.submitted", {"lead_id": str(lead_id), "source": lead_source.name})
        return LeadAccepted(lead_id=lead_id, status=status)

    @post("/{lead_id:uuid}/approve", status_code=HTTP_202_ACCEPTED, raises=[HTTPException])
    async def approve_lead(
        self,
        lead_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        publisher: NamedDependency[Publisher],
        metrics: NamedDependency[GatewayMetrics],
    ) -> LeadAccepted:
        require_admin(principal)
        # The event is confirmed before the approval commits: a 503 leaves the lead untouched. The worker
        # retries while it cannot yet see the commit.
        async with engine.begin() as connection:
            await _decide(connection, lead_id, "approved", principal, None)
            try:
                await publisher.publish(
                    LeadApproved(lead_id=lead_id, approved_by=principal.subject), message_id=f"lead.approved:{lead_id}"
                )
            except PublishFailed as error:
                log.error("lead.publish_failed", error, {"lead_id": str(lead_id)})
                raise broker_unavailable() from None
        metrics.leads_approved.add(1, {"by": "admin"})
        return LeadAccepted(lead_id=lead_id, status="approved")

    @post("/{lead_id:uuid}/reject", status_code=200, raises=[HTTPException])
    async def reject_lead(
        self,
        lead_id: FromPath[uuid.UUID],
        data: Annotated[Rejection, Body()],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> LeadAccepted:
        require_admin(principal)
        async with engine.begin() as connection:
            await _decide(connection, lead_id, "rejected", principal, data.reason)
        return LeadAccepted(lead_id=lead_id, status="rejected")


async def _decide(
    connection: AsyncConnection,
    lead_id: uuid.UUID,
    status: str,
    principal: Principal,
    reason: str | None,
) -> None:
    decided = await connection.execute(
        text(
            "UPDATE leads SET status = :status, decided_by = :actor, decided_at = now(), rejection_reason = :reason "
            "WHERE id = :id AND status = 'submitted'"
        ),
        {"status": status, "actor": uuid.UUID(principal.subject), "reason": reason, "id": lead_id},
    )
    if decided.rowcount != 1:
        current = await connection.scalar(text("SELECT status FROM leads WHERE id = :id"), {"id": lead_id})
        if current is None:
            raise NotFoundException(f"lead {lead_id} not found")
        raise ClientException(status_code=HTTP_409_CONFLICT, detail=f"lead is already {current}")
    await audit.record(
        connection, actor=principal.subject, action=f"lead.{status}", entity_type="lead", entity_id=str(lead_id)
    )
