"""Leads: lead sources submit, admins approve or reject. A 202 means the lead and its event are committed."""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Annotated

import orjson
from litestar import Controller, MediaType, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.params import Body, FromPath, HeaderParameter
from litestar.response.base import ASGIResponse
from litestar.status_codes import HTTP_202_ACCEPTED
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway import approvals, submissions
from ingest_gateway.accounts import AuthenticatedSource
from ingest_gateway.metrics import GatewayMetrics
from ingest_gateway.outbox import Relay
from ingest_gateway.routes.errors import as_http
from ingest_gateway.submissions import LeadSubmission
from libs.auth import Principal
from libs.db.tables import Lead, LeadStatus
from libs.logging import get_logger
from libs.web import error_responses, fits_column

log = get_logger("ingest_gateway.leads")
IDEMPOTENCY_KEY_LENGTH = fits_column(Lead.idempotency_key).max_length


class LeadAccepted(BaseModel):
    lead_id: uuid.UUID
    status: LeadStatus


def accepted(lead_id: uuid.UUID, status: LeadStatus) -> ASGIResponse:
    """A lead submission's 202 with LeadAccepted's body, encoded here: Litestar's response pipeline for a returned
    model (a Response, its rendering through the model's encoder hook, then an ASGIResponse) took 4% of the request's
    CPU, and building and dumping the pydantic model 1.7%."""
    # str(): a repeat's id comes back from asyncpg as its own UUID subclass, which orjson does not take.
    body = orjson.dumps({"lead_id": str(lead_id), "status": status})
    return ASGIResponse(body=body, status_code=HTTP_202_ACCEPTED, media_type=MediaType.JSON)


# What the route answers, as Litestar documents a route returning LeadAccepted.
SUBMITTED = ResponseSpec(
    data_container=LeadAccepted, description=HTTPStatus(HTTP_202_ACCEPTED).description, generate_examples=False
)


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=1000, pattern=r"^[^\x00]*$")]


class LeadsController(Controller):
    path = "/api/v1/leads"
    tags = ["leads"]  # noqa: RUF012

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        raises=[HTTPException],
        responses={HTTP_202_ACCEPTED: SUBMITTED, **error_responses(409, 503)},
        security=[{"apiKey": []}],
    )
    async def submit_lead(
        self,
        data: Annotated[LeadSubmission, Body()],
        lead_source: NamedDependency[AuthenticatedSource],
        intake: NamedDependency[submissions.Intake],
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", max_length=IDEMPOTENCY_KEY_LENGTH)
        ] = None,
    ) -> ASGIResponse:
        """Idempotent on the source's external id (or Idempotency-Key): a repeat answers like the first. 202: the
        lead and its lead.submitted are committed together (published by the outbox's relay); 503 with
        Retry-After: the database could not store it, nothing was kept."""
        lead = await intake.submit(lead_source, data, idempotency_key)
        if lead.created:  # counted by the group commit, once per batch
            intake.relay.notify()
            log.info("lead.submitted", {"lead_id": str(lead.lead_id), "source": lead_source.name})
        return accepted(lead.lead_id, lead.status)

    @post(
        "/{lead_id:uuid}/approve",
        status_code=HTTP_202_ACCEPTED,
        raises=[HTTPException],
        responses=error_responses(409, 503),
        security=[{"bearer": []}],
    )
    async def approve_lead(
        self,
        lead_id: FromPath[uuid.UUID],
        admin: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        relay: NamedDependency[Relay],
        metrics: NamedDependency[GatewayMetrics],
    ) -> LeadAccepted:
        with as_http():
            await approvals.approve(engine, lead_id, uuid.UUID(admin.subject))
        relay.notify()
        metrics.leads_approved.add(1, {"by": "admin"})
        return LeadAccepted(lead_id=lead_id, status=LeadStatus.approved)

    @post(
        "/{lead_id:uuid}/reject",
        status_code=200,
        raises=[HTTPException],
        responses=error_responses(409, 503),
        security=[{"bearer": []}],
    )
    async def reject_lead(
        self,
        lead_id: FromPath[uuid.UUID],
        data: Annotated[Rejection, Body()],
        admin: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> LeadAccepted:
        with as_http():
            await approvals.reject(engine, lead_id, uuid.UUID(admin.subject), data.reason)
        return LeadAccepted(lead_id=lead_id, status=LeadStatus.rejected)
