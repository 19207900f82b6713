"""Bad-lead reports: the owning provider reports, an admin approves (refund to the ledger) or rejects."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException, PermissionDeniedException
from litestar.params import Body, FromPath
from litestar.status_codes import HTTP_409_CONFLICT
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Row, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest_gateway.metrics import GatewayMetrics
from ingest_gateway.routes.leads import broker_unavailable
from libs import audit, ledger
from libs.auth import Principal, require_admin
from libs.contracts import SendEmail
from libs.logging import get_logger
from libs.messaging.publisher import Publisher, PublishFailed

log = get_logger("ingest_gateway.bad_leads")


class BadLeadReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=3, max_length=2000, pattern=r"^[^\x00]*$")]


class ReportFiled(BaseModel):
    id: uuid.UUID
    status: str


class Decision(BaseModel):
    id: uuid.UUID
    status: str
    refund_id: uuid.UUID | None = None
    amount_cents: int | None = None
    balance_cents: int | None = None


class AssignmentReportsController(Controller):
    path = "/api/v1/assignments"
    tags = ["bad-lead reports"]  # noqa: RUF012

    @post("/{assignment_id:uuid}/bad-lead-reports", status_code=201)
    async def report_bad_lead(
        self,
        assignment_id: FromPath[uuid.UUID],
        data: Annotated[BadLeadReport, Body()],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        metrics: NamedDependency[GatewayMetrics],
    ) -> ReportFiled:
        if principal.role != "provider" or principal.provider_id is None:
            raise PermissionDeniedException("only the provider that received the lead can report it")
        try:
            async with engine.begin() as connection:
                report_id = await connection.scalar(
                    text(
                        "INSERT INTO bad_lead_reports (assignment_id, provider_id, reason) "
                        "SELECT id, provider_id, :reason FROM assignments WHERE id = :id AND provider_id = :provider "
                        "RETURNING id"
                    ),
                    {"reason": data.reason, "id": assignment_id, "provider": principal.provider_id},
                )
                if report_id is None:
                    raise NotFoundException(f"assignment {assignment_id} not found")
                await audit.record(
                    connection, actor=principal.subject, action="bad_lead.reported", entity_type="bad_lead_report",
                    entity_id=str(report_id), metadata={"assignment_id": assignment_id},
                )  # fmt: skip
        except IntegrityError:
            raise ClientException(status_code=HTTP_409_CONFLICT, detail="this lead was already reported") from None
        metrics.bad_leads_reported.add(1)
        return ReportFiled(id=report_id, status="pending")


class BadLeadReportsController(Controller):
    path = "/api/v1/bad-lead-reports"
    tags = ["bad-lead reports"]  # noqa: RUF012

    @post("/{report_id:uuid}/approve", status_code=200)
    async def approve(
        self,
        report_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        publisher: NamedDependency[Publisher],
        metrics: NamedDependency[GatewayMetrics],
    ) -> Decision:
        require_admin(principal)
        async with engine.begin() as connection:
            report = await _decide(connection, report_id, "approved", principal)
            refund_id = await connection.scalar(
                text(
                    "INSERT INTO refunds (bad_lead_report_id, assignment_id, provider_id, amount_cents) "
                    "VALUES (:report, :assignment, :provider, :amount) RETURNING id"
                ),
                {"report": report_id, "assignment": report.assignment_id, "provider": report.provider_id,
                 "amount": report.price_cents},
            )  # fmt: skip
            new_balance = await ledger.credit_refund(connection, report.provider_id, report.price_cents, refund_id)
            await connection.execute(
                text("UPDATE assignments SET status = 'refunded' WHERE id = :id"), {"id": report.assignment_id}
            )
            await audit.record(
                connection, actor=principal.subject, action="refund.approved", entity_type="bad_lead_report",
                entity_id=str(report_id), metadata={"refund_id": refund_id, "amount_cents": report.price_cents},
            )  # fmt: skip
            email = SendEmail(
                template="refund_approved",
                to=report.provider_email,
                params={
                    "amount_cents": report.price_cents,
                    "lead_id": str(report.lead_id),
                    "balance_cents": new_balance,
                },
            )
            # Confirmed before the refund commits: a broker outage answers 503 and changes nothing.
            try:
                await publisher.publish(email, message_id=f"email:refund_approved:{refund_id}")
            except PublishFailed as error:
                log.error("refund.email_not_queued", error, {"report_id": str(report_id)})
                raise broker_unavailable() from None
        metrics.refunds_approved.add(1)
        return Decision(
            id=report_id,
            status="approved",
            refund_id=refund_id,
            amount_cents=report.price_cents,
            balance_cents=new_balance,
        )

    @post("/{report_id:uuid}/reject", status_code=200)
    async def reject(
        self,
        report_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> Decision:
        require_admin(principal)
        async with engine.begin() as connection:
            await _decide(connection, report_id, "rejected", principal)
            await audit.record(
                connection, actor=principal.subject, action="bad_lead.rejected", entity_type="bad_lead_report",
                entity_id=str(report_id),
            )  # fmt: skip
        return Decision(id=report_id, status="rejected")


async def _decide(connection: AsyncConnection, report_id: uuid.UUID, status: str, principal: Principal) -> Row[Any]:
    report = (
        await connection.execute(
            text(
                "UPDATE bad_lead_reports r SET status = :status, decided_by = :actor, decided_at = now() "
                "FROM assignments a JOIN providers p ON p.id = a.provider_id "
                "WHERE r.id = :id AND r.status = 'pending' AND a.id = r.assignment_id "
                "RETURNING r.assignment_id, r.provider_id, a.price_cents, a.lead_id, p.email AS provider_email"
            ),
            {"status": status, "actor": uuid.UUID(principal.subject), "id": report_id},
        )
    ).first()
    if report is None:
        current = await connection.scalar(text("SELECT status FROM bad_lead_reports WHERE id = :id"), {"id": report_id})
        if current is None:
            raise NotFoundException(f"bad-lead report {report_id} not found")
        raise ClientException(status_code=HTTP_409_CONFLICT, detail=f"report is already {current}")
    return report
