"""Bad-lead reports: only the receiving provider files one, once; each report is decided once."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from ingest_gateway import bad_lead_reports
from ingest_gateway.errors import Conflict, Forbidden, NotFound
from libs.auth import Principal, Role
from libs.db.tables import Assignment, BadLeadReport, ReportStatus


def principal(role: Role, provider_id: uuid.UUID | None) -> Principal:
    return Principal(subject=str(uuid.uuid4()), role=role, provider_id=provider_id, amr=("pwd", "otp"))


async def status_of(engine: AsyncEngine, report_id: uuid.UUID) -> ReportStatus:
    async with engine.connect() as connection:
        status: ReportStatus = (
            await connection.execute(select(col(BadLeadReport.status)).where(col(BadLeadReport.id) == report_id))
        ).scalar_one()
    return status


def test_a_provider_reports_as_itself() -> None:
    provider_id = uuid.uuid4()
    assert bad_lead_reports.reporter(principal("provider", provider_id)) == provider_id


@pytest.mark.parametrize(("role", "provider_id"), [("admin", None), ("admin", uuid.uuid4()), ("provider", None)])
def test_only_a_provider_with_a_provider_id_may_report(role: Role, provider_id: uuid.UUID | None) -> None:
    with pytest.raises(Forbidden):
        bad_lead_reports.reporter(principal(role, provider_id))


def test_a_report_decided_before_is_a_conflict_naming_its_status() -> None:
    refused = bad_lead_reports.refusal(uuid.uuid4(), ReportStatus.rejected)
    assert isinstance(refused, Conflict)
    assert str(refused) == "report is already rejected"
    assert isinstance(bad_lead_reports.refusal(uuid.uuid4(), None), NotFound)


async def test_a_filed_report_is_pending(engine: AsyncEngine, report: BadLeadReport, assignment: Assignment) -> None:
    assert (report.status, report.assignment_id, report.provider_id) == (
        ReportStatus.pending,
        assignment.id,
        assignment.provider_id,
    )
    assert report.reason == "wrong number"


async def test_a_lead_is_reported_once(engine: AsyncEngine, report: BadLeadReport, provider_user: Principal) -> None:
    with pytest.raises(Conflict, match="already reported"):
        await bad_lead_reports.file(engine, report.assignment_id, provider_user, "still wrong")


async def test_another_providers_assignment_is_not_found(engine: AsyncEngine, assignment: Assignment) -> None:
    stranger = principal("provider", uuid.uuid4())
    with pytest.raises(NotFound):
        await bad_lead_reports.file(engine, assignment.id, stranger, "not even mine")


async def test_of_two_admins_deciding_at_once_the_second_gets_a_conflict(
    engine: AsyncEngine, report: BadLeadReport, admin: uuid.UUID
) -> None:
    outcomes = await asyncio.gather(
        bad_lead_reports.reject(engine, report.id, admin),
        bad_lead_reports.reject(engine, report.id, admin),
        return_exceptions=True,
    )
    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["Conflict", "NoneType"]
    assert await status_of(engine, report.id) == ReportStatus.rejected
