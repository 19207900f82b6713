"""An approved bad-lead report: the refund, its ledger credit, the refunded assignment and the provider's email,
all in one transaction that commits only once the email is queued."""

from __future__ import annotations

import uuid

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col

from ingest_gateway import bad_lead_reports
from ingest_gateway.bad_lead_reports import DecidedReport
from libs import audit, ledger
from libs.contracts import SendEmail
from libs.db.tables import Assignment, AssignmentStatus, LedgerKind, Refund, ReportStatus
from libs.logging import get_logger
from libs.messaging.publisher import Publisher, PublishFailed

log = get_logger("ingest_gateway.bad_leads")


class RefundApproved(SQLModel):
    refund_id: uuid.UUID
    amount_cents: int
    balance_cents: int


def refund_email(report: DecidedReport, balance_cents: int) -> SendEmail:
    """The provider learns the amount given back, for which lead, and what its balance is now."""
    return SendEmail(
        template="refund_approved",
        to=report.provider_email,
        params={"amount_cents": report.price_cents, "lead_id": str(report.lead_id), "balance_cents": balance_cents},
    )


async def approve(engine: AsyncEngine, publisher: Publisher, report_id: uuid.UUID, actor: uuid.UUID) -> RefundApproved:
    """Refunds the whole price of the reported lead. The email is confirmed before the refund commits: on
    PublishFailed nothing has changed and the report is still pending."""
    async with engine.begin() as connection:
        report = await bad_lead_reports.decide(connection, report_id, ReportStatus.approved, actor)
        refund_id = (
            await connection.execute(
                insert(Refund).returning(col(Refund.id)),
                {
                    "bad_lead_report_id": report_id,
                    "assignment_id": report.assignment_id,
                    "provider_id": report.provider_id,
                    "amount_cents": report.price_cents,
                },
            )
        ).scalar_one()
        balance_cents = await ledger.credit(
            connection, report.provider_id, report.price_cents, LedgerKind.refund, refund_id=refund_id
        )
        await connection.execute(
            update(Assignment)
            .where(col(Assignment.id) == report.assignment_id)
            .values(status=AssignmentStatus.refunded)
        )
        await audit.record(
            connection, actor=str(actor), action="refund.approved", entity_type="bad_lead_report",
            entity_id=str(report_id), metadata={"refund_id": refund_id, "amount_cents": report.price_cents},
        )  # fmt: skip
        try:
            await publisher.publish(
                refund_email(report, balance_cents), message_id=f"email:refund_approved:{refund_id}"
            )
        except PublishFailed as error:
            log.error("refund.email_not_queued", error, {"report_id": str(report_id)})
            raise
    return RefundApproved(refund_id=refund_id, amount_cents=report.price_cents, balance_cents=balance_cents)
