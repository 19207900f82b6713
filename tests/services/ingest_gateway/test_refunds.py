"""An approved bad-lead report: the provider is told the amount, the lead and its new balance; without the email
confirmed nothing changes."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from ingest_gateway import bad_lead_reports, providers, refunds
from ingest_gateway.bad_lead_reports import DecidedReport
from ingest_gateway.errors import Conflict, NotFound
from libs.db.tables import Assignment, AssignmentStatus, BadLeadReport, LedgerEntry, Refund, ReportStatus
from libs.messaging.publisher import Publisher, PublishFailed


async def state(engine: AsyncEngine, report: BadLeadReport) -> tuple[ReportStatus, AssignmentStatus, int, int]:
    """The report's status, the assignment's, the provider's balance and how many refunds it has."""
    async with engine.connect() as connection:
        report_status = (
            await connection.execute(select(col(BadLeadReport.status)).where(col(BadLeadReport.id) == report.id))
        ).scalar_one()
        assignment_status = (
            await connection.execute(select(col(Assignment.status)).where(col(Assignment.id) == report.assignment_id))
        ).scalar_one()
        refunds_made = len((await connection.execute(select(col(Refund.id)).where(
            col(Refund.bad_lead_report_id) == report.id))).all())  # fmt: skip
    return report_status, assignment_status, await providers.balance(engine, report.provider_id), refunds_made


def test_the_refund_email_tells_the_provider_the_amount_the_lead_and_the_new_balance() -> None:
    report = DecidedReport(assignment_id=uuid.uuid4(), provider_id=uuid.uuid4(), price_cents=1500,
                           lead_id=uuid.uuid4(), provider_email="roofers@example.com")  # fmt: skip
    email = refunds.refund_email(report, balance_cents=6500)
    assert (email.template, email.to) == ("refund_approved", "roofers@example.com")
    assert email.params == {"amount_cents": 1500, "lead_id": str(report.lead_id), "balance_cents": 6500}


async def test_a_refund_whose_email_is_not_confirmed_changes_nothing(
    engine: AsyncEngine, report: BadLeadReport, admin: uuid.UUID, broker_down: Publisher
) -> None:
    before = await state(engine, report)
    with pytest.raises(PublishFailed):
        await refunds.approve(engine, broker_down, report.id, admin)
    assert await state(engine, report) == before
    assert before[:2] == (ReportStatus.pending, AssignmentStatus.delivered)
    async with engine.connect() as connection:
        credits = await connection.scalar(
            select(col(LedgerEntry.id)).where(col(LedgerEntry.provider_id) == report.provider_id,
                                              col(LedgerEntry.refund_id).is_not(None))
        )  # fmt: skip
    assert credits is None


async def test_a_rejected_report_is_not_refunded(
    engine: AsyncEngine, report: BadLeadReport, admin: uuid.UUID, broker_down: Publisher
) -> None:
    await bad_lead_reports.reject(engine, report.id, admin)
    before = await state(engine, report)
    with pytest.raises(Conflict, match="report is already rejected"):
        await refunds.approve(engine, broker_down, report.id, admin)
    assert await state(engine, report) == before


async def test_an_unknown_report_is_not_found(engine: AsyncEngine, admin: uuid.UUID, broker_down: Publisher) -> None:
    with pytest.raises(NotFound):
        await refunds.approve(engine, broker_down, uuid.uuid4(), admin)
