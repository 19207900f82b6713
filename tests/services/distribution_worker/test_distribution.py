"""Distribution on the real PostgreSQL (and, for a lost session, the real broker): two statements per lead, no
deadlock between workers sharing providers, a balance that runs out mid-race charged once, a redelivery or a lead
moved on meanwhile changing nothing, a terminated session replaced without a failed delivery."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import col

from distribution_worker.assignment import Choice, MatchingSubscription
from distribution_worker.distribution import Outcome, distribute
from distribution_worker.lead_state import LeadEvent
from distribution_worker.main import build
from distribution_worker.metrics import DistributionMetrics
from distribution_worker.settings import Settings
from distribution_worker.settlement import settle
from distribution_worker.subscribers import emails
from libs.contracts import LeadApproved
from libs.db.tables import (
    Assignment,
    Lead,
    LeadSource,
    LeadStatus,
    LedgerEntry,
    LedgerKind,
    PausedReason,
    Provider,
    Subscription,
    SubscriptionStatus,
)
from libs.telemetry import setup_telemetry
from tests.services.conftest import eventually, metric_value, publisher_for, settings_for

PRICE = 100
ZIP = "94107"


@dataclass
class Market:
    engine: AsyncEngine
    category: str
    source: uuid.UUID

    async def provider(self, balance_cents: int, low_balance_threshold_cents: int = 0) -> uuid.UUID:
        async with self.engine.begin() as connection:
            provider: uuid.UUID | None = await connection.scalar(
                insert(Provider)
                .values(name="p", email=f"p-{uuid.uuid4().hex[:8]}@example.com", balance_cents=balance_cents,
                        low_balance_threshold_cents=low_balance_threshold_cents)
                .returning(col(Provider.id))
            )  # fmt: skip
            await connection.execute(
                insert(LedgerEntry).values(provider_id=provider, kind=LedgerKind.top_up, amount_cents=balance_cents)
            )
            await connection.execute(
                insert(Subscription).values(
                    provider_id=provider, category=self.category, zip_codes=[ZIP], price_cents=PRICE
                )
            )
        assert provider is not None
        return provider

    async def approved_leads(self, count: int) -> list[uuid.UUID]:
        rows = [
            {"source_id": self.source, "external_id": uuid.uuid4().hex, "category": self.category, "zip": ZIP,
             "contact": {"name": "n"}, "status": LeadStatus.approved}
            for _ in range(count)
        ]  # fmt: skip
        async with self.engine.begin() as connection:
            return list(await connection.scalars(insert(Lead).returning(col(Lead.id)), rows))

    async def scalar(self, statement: Any) -> Any:
        async with self.engine.connect() as connection:
            return await connection.scalar(statement)

    async def charges_of(self, provider: uuid.UUID) -> int:
        return int(
            await self.scalar(
                select(func.count()).where(
                    col(LedgerEntry.provider_id) == provider, col(LedgerEntry.kind) == LedgerKind.lead_charge
                )
            )
        )

    async def balance_and_ledger(self, provider: uuid.UUID) -> tuple[int, int]:
        balance = await self.scalar(select(col(Provider.balance_cents)).where(col(Provider.id) == provider))
        ledger = await self.scalar(
            select(func.sum(col(LedgerEntry.amount_cents))).where(col(LedgerEntry.provider_id) == provider)
        )
        return int(balance), int(ledger)


@pytest.fixture
async def market(database_url: str) -> AsyncIterator[Market]:
    engine = create_async_engine(database_url, pool_size=10)
    async with engine.begin() as connection:
        source = await connection.scalar(
            insert(LeadSource).values(name="s", api_key_hash=uuid.uuid4().hex).returning(col(LeadSource.id))
        )
    assert source is not None
    yield Market(engine, f"roofing-{uuid.uuid4().hex[:8]}", source)
    await engine.dispose()


METRICS = DistributionMetrics.create(setup_telemetry("distribution-test"))


async def distribute_approved(engine: AsyncEngine, lead: uuid.UUID, message_id: str | None = None) -> Outcome:
    return await distribute(
        engine, lead, message_id=message_id or f"lead.approved:{lead}", event=LeadEvent.approved, max_providers=3,
        metrics=METRICS,
    )  # fmt: skip


async def test_a_lead_is_distributed_in_two_statements_without_a_transaction_block(market: Market) -> None:
    await asyncio.gather(*(market.provider(10_000) for _ in range(3)))
    [lead] = await market.approved_leads(1)
    statements: list[str] = []
    sent: list[str] = []
    event.listen(market.engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    @event.listens_for(market.engine.sync_engine.pool, "connect")
    def log_queries(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(lambda record: sent.append(record.query.strip()))

    await market.engine.dispose()  # new connections, so that each logs what it sends
    outcome = await distribute_approved(market.engine, lead)
    assert (outcome.status, len(outcome.assigned)) == (LeadStatus.distributed, 3)
    assert len(statements) == 2
    assert not [query for query in sent if query.rstrip(";").upper() in {"BEGIN", "COMMIT", "ROLLBACK", ""}]


async def test_workers_sharing_providers_never_deadlock_and_charge_each_assignment_once(market: Market) -> None:
    providers = await asyncio.gather(*(market.provider(100_000) for _ in range(4)))
    leads = await market.approved_leads(90)
    workers = [market.engine, *(create_async_engine(market.engine.url, pool_size=10) for _ in range(2))]
    pending = list(leads)

    async def worker(engine: AsyncEngine) -> None:
        while pending:
            await distribute_approved(engine, pending.pop())

    try:
        # Three workers, ten deliveries each at a time, every lead wanting three of the same four providers.
        await asyncio.gather(*(worker(engine) for engine in workers for _ in range(10)))
    finally:
        for engine in workers[1:]:
            await engine.dispose()
    assignments = await market.scalar(select(func.count()).where(col(Assignment.lead_id).in_(leads)))
    charges = [await market.charges_of(provider) for provider in providers]
    assert (assignments, sum(charges)) == (270, 270)
    for provider, charged in zip(providers, charges, strict=True):
        assert await market.balance_and_ledger(provider) == (100_000 - charged * PRICE,) * 2


async def test_a_balance_that_runs_out_during_a_race_is_charged_once_and_its_subscription_paused(
    market: Market,
) -> None:
    last_lead_only = await market.provider(PRICE)
    others = await asyncio.gather(*(market.provider(100_000) for _ in range(2)))
    leads = await market.approved_leads(10)
    outcomes = await asyncio.gather(*(distribute_approved(market.engine, lead) for lead in leads))
    assert all(outcome.status == LeadStatus.distributed for outcome in outcomes)
    assert await market.charges_of(last_lead_only) == 1
    assert await market.balance_and_ledger(last_lead_only) == (0, 0)
    assert [await market.charges_of(provider) for provider in others] == [10, 10]
    paused = await market.scalar(
        select(col(Subscription.paused_reason)).where(
            col(Subscription.provider_id) == last_lead_only, col(Subscription.status) == SubscriptionStatus.paused
        )
    )
    assert paused == PausedReason.insufficient_balance


async def test_a_redelivered_message_assigns_and_charges_nothing_again(market: Market) -> None:
    provider = await market.provider(10_000)
    [lead] = await market.approved_leads(1)
    first = await distribute_approved(market.engine, lead)
    again = await distribute_approved(market.engine, lead)
    assert (first.newly_distributed, again.newly_distributed) == (True, False)
    assert [a.assignment_id for a in again.assigned] == [a.assignment_id for a in first.assigned]
    assert await market.charges_of(provider) == 1


async def test_a_redelivery_asks_again_for_the_low_balance_mail_its_charge_crossed(market: Market) -> None:
    # 250 -> 150 crosses the threshold of 200; the next lead's charge (150 -> 50) does not cross it again.
    await market.provider(250, low_balance_threshold_cents=200)
    first_lead, second_lead = await market.approved_leads(2)
    first = await distribute_approved(market.engine, first_lead)
    await distribute_approved(market.engine, second_lead)
    # The mails' publish failed after the commit: the redelivery is all that is left to ask for them.
    again = await distribute_approved(market.engine, first_lead)
    second_again = await distribute_approved(market.engine, second_lead)
    assert again.newly_distributed is False
    assert emails(again) == emails(first)
    low_balance = {mail.job_id: mail for mail in emails(again)}[f"email:low_balance:{first.assigned[0].assignment_id}"]
    assert low_balance.params == {"balance_cents": 150}
    assert [mail.template for mail in emails(second_again)] == ["new_lead"]


async def test_a_settlement_for_a_lead_distributed_meanwhile_writes_nothing(market: Market) -> None:
    provider = await market.provider(10_000)
    [lead] = await market.approved_leads(1)
    await distribute_approved(market.engine, lead)
    subscription = await market.scalar(select(col(Subscription.id)).where(col(Subscription.provider_id) == provider))
    stale = MatchingSubscription(
        id=subscription, provider_id=provider, provider_email="p@example.com", price_cents=PRICE,
        low_balance_threshold_cents=0, last_assigned_at=None, created_at=datetime.now(UTC), daily_cap=None,
        assigned_today=0, balance_cents=10_000,
    )  # fmt: skip
    async with market.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as connection:
        settled = await settle(
            connection, lead, read_status=LeadStatus.approved, message_id="another-delivery",
            choice=Choice([stale], []),
        )  # fmt: skip
    assert (settled.recorded, settled.balances_after) == (False, {})
    assert await market.charges_of(provider) == 1


async def test_a_terminated_database_session_is_replaced_without_a_failed_delivery(
    market: Market, service_env: dict[str, str], rabbitmq_url: str
) -> None:
    await market.provider(10_000)
    first, second = await market.approved_leads(2)
    # A name of its own, so that only this worker's sessions are terminated.
    settings = settings_for(Settings, service_env, service_name=f"distribution-test-{uuid.uuid4().hex[:6]}")
    app, _ = build(settings, setup_telemetry(settings.service_name))
    publisher, broker = await publisher_for(rabbitmq_url)

    async def distributed(lead: uuid.UUID) -> bool:
        status = await market.scalar(select(col(Lead.status)).where(col(Lead.id) == lead))
        return bool(status == LeadStatus.distributed)

    try:
        async with AsyncTestClient(app) as worker:
            await publisher.publish(LeadApproved(lead_id=first, approved_by="admin"))
            await eventually(lambda: distributed(first))
            failed_before = metric_value((await worker.get("/metrics")).text, "fmhl_jobs_failed_total")
            async with market.engine.begin() as connection:
                terminated = await connection.scalars(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"),
                    {"name": settings.service_name},
                )
                assert any(terminated)
            await publisher.publish(LeadApproved(lead_id=second, approved_by="admin"))
            await eventually(lambda: distributed(second))
            failed_after = metric_value((await worker.get("/metrics")).text, "fmhl_jobs_failed_total")
        # Neither retried nor dead-lettered: the delivery succeeded on a new connection.
        assert failed_after == failed_before
    finally:
        await broker.stop()
