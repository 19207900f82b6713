"""An approved bad-lead report: the provider is told the amount, the lead and its new balance, by an email
committed with the refund."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from ingest_gateway import bad_lead_reports, providers, refunds
from ingest_gateway.bad_lead_reports import DecidedReport
from ingest_gateway.errors import Conflict, NotFound
from libs.contracts import SendEmail
from libs.db.tables import Assignment, AssignmentStatus, BadLeadReport, Refund, ReportStatus
from tests.services.ingest_gateway.conftest import PRICE_CENTS, staged


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


async def test_a_refund_is_committed_with_the_providers_email_staged(
    engine: AsyncEngine, report: BadLeadReport, admin: uuid.UUID
) -> None:
    _, _, balance_before, _ = await state(engine, report)
    refund = await refunds.approve(engine, report.id, admin)
    assert await state(engine, report) == (
        ReportStatus.approved, AssignmentStatus.refunded, balance_before + PRICE_CENTS, 1
    )  # fmt: skip
    [(message_type, body)] = await staged(engine, f"email:refund_approved:{refund.refund_id}")
    assert message_type == "email.send"
    email = SendEmail.model_validate_json(body)
    assert (email.template, email.params["amount_cents"], email.params["balance_cents"]) == (
        "refund_approved", PRICE_CENTS, refund.balance_cents
    )  # fmt: skip


async def test_a_rejected_report_is_not_refunded(engine: AsyncEngine, report: BadLeadReport, admin: uuid.UUID) -> None:
    await bad_lead_reports.reject(engine, report.id, admin)
    before = await state(engine, report)
    with pytest.raises(Conflict, match="report is already rejected"):
        await refunds.approve(engine, report.id, admin)
    assert await state(engine, report) == before


async def test_an_unknown_report_is_not_found(engine: AsyncEngine, admin: uuid.UUID) -> None:
    with pytest.raises(NotFound):
        await refunds.approve(engine, uuid.uuid4(), admin)
