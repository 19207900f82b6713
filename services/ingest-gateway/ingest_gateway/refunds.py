"""An approved bad-lead report: the refund, its ledger credit, the refunded assignment and the provider's email
(staged in the outbox), all in one transaction."""

from __future__ import annotations

import uuid

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col

from ingest_gateway import bad_lead_reports, outbox
from ingest_gateway.bad_lead_reports import DecidedReport
from libs import audit, ledger
from libs.contracts import SendEmail
from libs.db.tables import Assignment, AssignmentStatus, LedgerKind, Refund, ReportStatus


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


async def approve(engine: AsyncEngine, report_id: uuid.UUID, actor: uuid.UUID) -> RefundApproved:
    """Refunds the whole price of the reported lead; the provider's email commits with the refund."""
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
        await outbox.stage(connection, refund_email(report, balance_cents), f"email:refund_approved:{refund_id}")
    return RefundApproved(refund_id=refund_id, amount_cents=report.price_cents, balance_cents=balance_cents)
