"""Lead intake: one lead per external id (or Idempotency-Key), stored with its lead.submitted staged together."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from ingest_gateway import submissions
from ingest_gateway.accounts import AuthenticatedSource, create_lead_source
from ingest_gateway.submissions import LeadSubmission
from libs.contracts import Contact, LeadSubmitted
from libs.db.tables import Lead, LeadStatus
from tests.services.ingest_gateway.conftest import staged


@pytest.fixture
async def source(engine: AsyncEngine) -> AuthenticatedSource:
    source_id, _ = await create_lead_source(engine, f"source-{uuid.uuid4().hex[:6]}", trusted=False)
    return AuthenticatedSource(id=source_id, name="forms", trusted=False)


def lead(external_id: str | None = None) -> LeadSubmission:
    contact = Contact(name="Ada", email="ada@example.com", phone="+1 415 555 0100")
    return LeadSubmission(external_id=external_id or uuid.uuid4().hex, category="roofing", zip="94107",
                          contact=contact)  # fmt: skip


async def leads_of(engine: AsyncEngine, source: AuthenticatedSource) -> list[tuple[uuid.UUID, str, LeadStatus]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(col(Lead.id), col(Lead.external_id), col(Lead.status)).where(col(Lead.source_id) == source.id)
        )
        return [(row.id, row.external_id, row.status) for row in rows]


async def test_a_new_lead_is_stored_with_its_event_staged(engine: AsyncEngine, source: AuthenticatedSource) -> None:
    submitted = await submissions.submit(engine, source, lead("ext-1"), None)
    assert submitted.created
    assert await leads_of(engine, source) == [(submitted.lead_id, "ext-1", LeadStatus.submitted)]
    [(message_type, body)] = await staged(engine, f"lead.submitted:{submitted.lead_id}")
    assert message_type == "lead.submitted"
    assert LeadSubmitted.model_validate_json(body) == LeadSubmitted(
        lead_id=submitted.lead_id, external_id="ext-1", category="roofing", zip="94107"
    )


async def test_a_repeat_answers_the_first_lead_and_stages_nothing_more(
    engine: AsyncEngine, source: AuthenticatedSource
) -> None:
    first = await submissions.submit(engine, source, lead("ext-1"), None)
    repeat = await submissions.submit(engine, source, lead("ext-1"), None)
    assert (repeat.lead_id, repeat.created) == (first.lead_id, False)
    assert len(await leads_of(engine, source)) == 1
    assert len(await staged(engine, f"lead.submitted:{first.lead_id}")) == 1


async def test_the_idempotency_key_names_the_same_lead_whatever_the_external_id(
    engine: AsyncEngine, source: AuthenticatedSource
) -> None:
    first = await submissions.submit(engine, source, lead("ext-a"), "key-1")
    repeat = await submissions.submit(engine, source, lead("ext-b"), "key-1")
    assert repeat.lead_id == first.lead_id
    assert await leads_of(engine, source) == [(first.lead_id, "ext-a", LeadStatus.submitted)]
