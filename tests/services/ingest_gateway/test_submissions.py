"""Lead intake: one lead per external id (or Idempotency-Key), and its event published until confirmed."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from ingest_gateway import submissions
from ingest_gateway.accounts import AuthenticatedSource, create_lead_source
from ingest_gateway.submissions import LeadSubmission
from libs.contracts import Contact
from libs.db.tables import Lead, LeadStatus
from libs.messaging.publisher import Publisher, PublishFailed


@pytest.fixture
async def source(engine: AsyncEngine) -> AuthenticatedSource:
    source_id, _ = await create_lead_source(engine, f"source-{uuid.uuid4().hex[:6]}", trusted=False)
    return AuthenticatedSource(id=source_id, name="forms", trusted=False)


def lead(external_id: str | None = None) -> LeadSubmission:
    contact = Contact(name="Ada", email="ada@example.com", phone="+1 415 555 0100")
    return LeadSubmission(external_id=external_id or uuid.uuid4().hex, category="roofing", zip="94107",
                          contact=contact)  # fmt: skip


async def leads_of(engine: AsyncEngine, source: AuthenticatedSource) -> list[tuple[str, LeadStatus, bool]]:
    """(external id, status, published) of each of the source's leads."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(col(Lead.external_id), col(Lead.status), col(Lead.published_at)).where(
                col(Lead.source_id) == source.id
            )
        )
        return [(row.external_id, row.status, row.published_at is not None) for row in rows]


async def test_a_lead_whose_event_is_not_confirmed_is_kept_unpublished_and_tried_again(
    engine: AsyncEngine, source: AuthenticatedSource, broker_down: Publisher
) -> None:
    submitted = lead("ext-1")
    with pytest.raises(PublishFailed):
        await submissions.submit(engine, broker_down, source, submitted, None)
    assert await leads_of(engine, source) == [("ext-1", LeadStatus.submitted, False)]
    # The repeat finds the lead unpublished and publishes again (failing again here, with the broker down).
    with pytest.raises(PublishFailed):
        await submissions.submit(engine, broker_down, source, submitted, None)
    assert await leads_of(engine, source) == [("ext-1", LeadStatus.submitted, False)]


async def test_the_idempotency_key_names_the_same_lead_whatever_the_external_id(
    engine: AsyncEngine, source: AuthenticatedSource, broker_down: Publisher
) -> None:
    with pytest.raises(PublishFailed):
        await submissions.submit(engine, broker_down, source, lead("ext-a"), "key-1")
    with pytest.raises(PublishFailed):
        await submissions.submit(engine, broker_down, source, lead("ext-b"), "key-1")
    assert await leads_of(engine, source) == [("ext-a", LeadStatus.submitted, False)]
