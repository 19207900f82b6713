"""Rows for the gateway's domain tests, seeded on the real PostgreSQL, what the outbox holds, and a publisher whose
broker is down."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import col

from ingest_gateway import bad_lead_reports, providers, top_ups
from ingest_gateway.accounts import create_lead_source, create_user
from ingest_gateway.providers import NewProvider, NewSubscription
from libs.auth import Principal, TotpSecrets
from libs.db.tables import Assignment, BadLeadReport, Lead
from libs.db.tables.outbox import OutboxMessage
from libs.messaging.broker import create_broker
from libs.messaging.publisher import Publisher
from libs.messaging.topology import TOPOLOGY
from libs.telemetry import setup_telemetry
from tests.conftest import TEST_TOTP_ENCRYPTION_KEY

PRICE_CENTS = 1500
BALANCE_CENTS = 5000  # what a provider holds after paying PRICE_CENTS for its lead


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def admin(engine: AsyncEngine) -> uuid.UUID:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    totp = TotpSecrets.from_keys(TEST_TOTP_ENCRYPTION_KEY)
    user_id, _ = await create_user(engine, email, "admin", "correct horse battery staple", None, True, totp=totp)
    return user_id


@pytest.fixture
async def provider_id(engine: AsyncEngine, admin: uuid.UUID) -> uuid.UUID:
    provider = NewProvider(name="Roofers Inc", email=f"p-{uuid.uuid4().hex[:8]}@example.com")
    provider_id = await providers.create(engine, provider, admin)
    await top_ups.add(engine, provider_id, BALANCE_CENTS, admin)
    return provider_id


@pytest.fixture
async def lead(engine: AsyncEngine) -> Lead:
    """A submitted lead, waiting for an admin's decision."""
    source_id, _ = await create_lead_source(engine, f"source-{uuid.uuid4().hex[:6]}", trusted=False)
    values = {"source_id": source_id, "external_id": uuid.uuid4().hex, "category": "roofing", "zip": "94107",
              "contact": {"name": "Ada", "email": "ada@example.com", "phone": "+1 415 555 0100"}}  # fmt: skip
    async with engine.begin() as connection:
        row = (await connection.execute(insert(Lead).returning(Lead), values)).one()
    return Lead(**row._mapping)


@pytest.fixture
async def assignment(engine: AsyncEngine, admin: uuid.UUID, provider_id: uuid.UUID, lead: Lead) -> Assignment:
    """The lead delivered to the provider, as the distribution-worker leaves it (the charge is left out)."""
    subscription = NewSubscription(category="roofing", zip_codes=["94107"], price_cents=PRICE_CENTS)
    subscription_id = await providers.subscribe(engine, provider_id, subscription, admin)
    values = {"lead_id": lead.id, "provider_id": provider_id, "subscription_id": subscription_id,
              "price_cents": PRICE_CENTS}  # fmt: skip
    async with engine.begin() as connection:
        row = (await connection.execute(insert(Assignment).returning(Assignment), values)).one()
    return Assignment(**row._mapping)


@pytest.fixture
def provider_user(assignment: Assignment) -> Principal:
    """A user of the provider that received the lead."""
    return Principal(subject=str(uuid.uuid4()), role="provider", provider_id=assignment.provider_id, amr=("pwd",))


@pytest.fixture
async def report(engine: AsyncEngine, assignment: Assignment, provider_user: Principal) -> BadLeadReport:
    """A pending bad-lead report of the assignment, filed by its provider."""
    report_id = await bad_lead_reports.file(engine, assignment.id, provider_user, "wrong number")
    async with engine.connect() as connection:
        row = (await connection.execute(select(BadLeadReport).where(col(BadLeadReport.id) == report_id))).one()
    return BadLeadReport(**row._mapping)


@pytest.fixture(scope="module")
def broker_down() -> Publisher:
    """A publisher whose broker never connected: every publish fails at once, as in an outage."""
    telemetry = setup_telemetry("ingest-gateway-tests")
    broker = create_broker("amqp://fmhl:not-used-by-this-test@127.0.0.1:1/none", telemetry, service="tests")
    return Publisher(broker, TOPOLOGY, telemetry, 1.0)


async def staged(engine: AsyncEngine, message_id: str) -> list[tuple[str, bytes]]:
    """(message type, body) of each outbox row staged under this message id."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(col(OutboxMessage.message_type), col(OutboxMessage.body)).where(
                col(OutboxMessage.message_id) == message_id
            )
        )
        return [(row.message_type, row.body) for row in rows]
