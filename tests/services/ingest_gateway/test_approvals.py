"""An admin's decision on a lead: once, by whoever is first, and an approval committed with its event."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from ingest_gateway import approvals
from ingest_gateway.errors import Conflict, NotFound
from libs.contracts import LeadApproved
from libs.db.tables import Lead, LeadStatus
from tests.services.ingest_gateway.conftest import staged


async def stored(engine: AsyncEngine, lead_id: uuid.UUID) -> Lead:
    async with engine.connect() as connection:
        row = (await connection.execute(select(Lead).where(col(Lead.id) == lead_id))).one()
    return Lead(**row._mapping)


def test_a_lead_that_does_not_exist_is_not_found() -> None:
    lead_id = uuid.uuid4()
    refused = approvals.refusal(lead_id, None)
    assert isinstance(refused, NotFound)
    assert str(lead_id) in str(refused)


@pytest.mark.parametrize("status", [LeadStatus.approved, LeadStatus.rejected, LeadStatus.distributed])
def test_a_lead_decided_before_is_a_conflict_naming_its_status(status: LeadStatus) -> None:
    refused = approvals.refusal(uuid.uuid4(), status)
    assert isinstance(refused, Conflict)
    assert str(refused) == f"lead is already {status.value}"


async def test_an_approval_is_committed_with_its_event_staged(
    engine: AsyncEngine, lead: Lead, admin: uuid.UUID
) -> None:
    await approvals.approve(engine, lead.id, admin)
    after = await stored(engine, lead.id)
    assert (after.status, after.decided_by) == (LeadStatus.approved, admin)
    [(message_type, body)] = await staged(engine, f"lead.approved:{lead.id}")
    assert message_type == "lead.approved"
    assert LeadApproved.model_validate_json(body) == LeadApproved(lead_id=lead.id, approved_by=str(admin))


async def test_an_approval_refused_stages_no_event(engine: AsyncEngine, lead: Lead, admin: uuid.UUID) -> None:
    await approvals.reject(engine, lead.id, admin, "spam")
    with pytest.raises(Conflict):
        await approvals.approve(engine, lead.id, admin)
    assert await staged(engine, f"lead.approved:{lead.id}") == []


async def test_a_rejection_records_who_rejected_it_and_why(engine: AsyncEngine, lead: Lead, admin: uuid.UUID) -> None:
    await approvals.reject(engine, lead.id, admin, "duplicate of an earlier lead")
    after = await stored(engine, lead.id)
    assert (after.status, after.decided_by, after.rejection_reason) == (
        LeadStatus.rejected,
        admin,
        "duplicate of an earlier lead",
    )
    assert after.decided_at is not None


async def test_of_two_admins_deciding_at_once_the_second_gets_a_conflict(
    engine: AsyncEngine, lead: Lead, admin: uuid.UUID
) -> None:
    outcomes = await asyncio.gather(
        approvals.reject(engine, lead.id, admin, "first"),
        approvals.reject(engine, lead.id, admin, "second"),
        return_exceptions=True,
    )
    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["Conflict", "NoneType"]
    assert (await stored(engine, lead.id)).rejection_reason in {"first", "second"}


async def test_deciding_an_unknown_lead_is_not_found(engine: AsyncEngine, admin: uuid.UUID) -> None:
    with pytest.raises(NotFound):
        await approvals.reject(engine, uuid.uuid4(), admin, "no such lead")
