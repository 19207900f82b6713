"""Bad-lead reports: the owning provider reports, an admin approves (refund to the ledger) or rejects."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import Body, FromPath
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway import bad_lead_reports, refunds
from ingest_gateway.metrics import GatewayMetrics
from ingest_gateway.outbox import Relay
from ingest_gateway.routes.errors import as_http
from libs.auth import Principal
from libs.db.tables import ReportStatus
from libs.web import error_responses


class NewReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=3, max_length=2000, pattern=r"^[^\x00]*$")]


class ReportFiled(BaseModel):
    id: uuid.UUID
    status: ReportStatus


class Decision(BaseModel):
    id: uuid.UUID
    status: ReportStatus
    refund_id: uuid.UUID | None = None
    amount_cents: int | None = None
    balance_cents: int | None = None


class AssignmentReportsController(Controller):
    path = "/api/v1/assignments"
    tags = ["bad-lead reports"]  # noqa: RUF012
    security = [{"bearer": []}]  # noqa: RUF012

    @post("/{assignment_id:uuid}/bad-lead-reports", status_code=201, responses=error_responses(409))
    async def report_bad_lead(
        self,
        assignment_id: FromPath[uuid.UUID],
        data: Annotated[NewReport, Body()],
        provider: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        metrics: NamedDependency[GatewayMetrics],
    ) -> ReportFiled:
        with as_http():
            report_id = await bad_lead_reports.file(engine, assignment_id, provider, data.reason)
        metrics.bad_leads_reported.add(1)
        return ReportFiled(id=report_id, status=ReportStatus.pending)


class BadLeadReportsController(Controller):
    path = "/api/v1/bad-lead-reports"
    tags = ["bad-lead reports"]  # noqa: RUF012
    security = [{"bearer": []}]  # noqa: RUF012

    @post("/{report_id:uuid}/approve", status_code=200, raises=[HTTPException], responses=error_responses(409, 503))
    async def approve(
        self,
        report_id: FromPath[uuid.UUID],
        admin: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        relay: NamedDependency[Relay],
        metrics: NamedDependency[GatewayMetrics],
    ) -> Decision:
        with as_http():
            refund = await refunds.approve(engine, report_id, uuid.UUID(admin.subject))
        relay.notify()
        metrics.refunds_approved.add(1)
        return Decision(
            id=report_id,
            status=ReportStatus.approved,
            refund_id=refund.refund_id,
            amount_cents=refund.amount_cents,
            balance_cents=refund.balance_cents,
        )

    @post("/{report_id:uuid}/reject", status_code=200, responses=error_responses(409))
    async def reject(
        self,
        report_id: FromPath[uuid.UUID],
        admin: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> Decision:
        with as_http():
            await bad_lead_reports.reject(engine, report_id, uuid.UUID(admin.subject))
        return Decision(id=report_id, status=ReportStatus.rejected)
