"""The three jobs on real data."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import case, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import col

from libs.db.tables import (
    AuditEntry,
    BalanceDiscrepancy,
    DeadLetter,
    DeadLetterStatus,
    LedgerEntry,
    LedgerKind,
    PausedReason,
    Provider,
    RunTrigger,
    ScheduledJobRun,
    Subscription,
    SubscriptionStatus,
)
from libs.messaging.publisher import Publisher
from scheduler.jobs import JobContext, clean_dead_letters, reactivate_subscriptions, reconcile_balances
from tests.services.conftest import publisher_for

pytestmark = [pytest.mark.database, pytest.mark.broker]


@pytest.fixture
async def context(database_url: str, rabbitmq_url: str) -> AsyncIterator[JobContext]:
    engine = create_async_engine(database_url)
    publisher, broker = await publisher_for(rabbitmq_url)
    yield await new_context(engine, publisher)
    await broker.stop()
    await engine.dispose()


async def new_context(engine: AsyncEngine, publisher: Publisher) -> JobContext:
    async with engine.begin() as connection:
        run_id = (
            await connection.execute(
                insert(ScheduledJobRun)
                .values(job="test", slot=func.clock_timestamp(), trigger=RunTrigger.manual)
                .returning(col(ScheduledJobRun.id))
            )
        ).scalar_one()
    return JobContext(engine, publisher, run_id, retention_days=30, cleanup_batch=5_000)


async def provider(
    engine: AsyncEngine, balance: int, price: int, *, ledger: int | None = None,
    paused_reason: PausedReason | None = PausedReason.insufficient_balance, paused_until: datetime | None = None,
) -> uuid.UUID:  # fmt: skip
    """A provider with `balance` (and a ledger summing to `ledger`, by default the balance) and one paused
    subscription at `price`."""
    async with engine.begin() as connection:
        provider_id = (
            await connection.execute(
                insert(Provider)
                .values(name="p", email="p@example.com", balance_cents=balance)
                .returning(col(Provider.id))
            )
        ).scalar_one()
        ledger = balance if ledger is None else ledger
        if ledger:
            await connection.execute(
                insert(LedgerEntry).values(provider_id=provider_id, kind=LedgerKind.top_up, amount_cents=ledger)
            )
        await connection.execute(
            insert(Subscription).values(
                provider_id=provider_id, category="c", zip_codes=["11111"], price_cents=price,
                status=SubscriptionStatus.paused, paused_reason=paused_reason, paused_until=paused_until,
            )
        )  # fmt: skip
    return provider_id


async def subscription_status(engine: AsyncEngine, provider_id: uuid.UUID) -> SubscriptionStatus | None:
    async with engine.connect() as connection:
        return await connection.scalar(
            select(col(Subscription.status)).where(col(Subscription.provider_id) == provider_id)
        )


async def test_reactivation_wakes_a_topped_up_provider_and_not_one_still_short(context: JobContext) -> None:
    topped_up = await provider(context.engine, balance=5000, price=5000)
    short = await provider(context.engine, balance=4999, price=5000)
    pause_over = await provider(context.engine, balance=0, price=100, paused_reason=None,
                                paused_until=datetime(2000, 1, 1, tzinfo=UTC))  # fmt: skip
    pause_ahead = await provider(context.engine, balance=0, price=100, paused_reason=None,
                                 paused_until=datetime.now(UTC) + timedelta(days=1))  # fmt: skip
    counts = await reactivate_subscriptions(context)
    assert counts["reactivated"] >= 2
    assert await subscription_status(context.engine, topped_up) == SubscriptionStatus.active
    assert await subscription_status(context.engine, pause_over) == SubscriptionStatus.active
    assert await subscription_status(context.engine, short) == SubscriptionStatus.paused
    assert await subscription_status(context.engine, pause_ahead) == SubscriptionStatus.paused


async def test_reconciliation_finds_a_planted_discrepancy_and_corrects_nothing(context: JobContext) -> None:
    clean = await provider(context.engine, balance=700, price=1)
    planted = await provider(context.engine, balance=900, price=1, ledger=1000)
    first = await reconcile_balances(context)
    second_context = await new_context(context.engine, context.publisher)
    second = await reconcile_balances(second_context)
    assert first["discrepancies"] == second["discrepancies"] >= 1
    async with context.engine.connect() as connection:
        found = (
            await connection.execute(select(BalanceDiscrepancy).where(col(BalanceDiscrepancy.run_id) == context.run_id))
        ).all()
        balance = await connection.scalar(select(col(Provider.balance_cents)).where(col(Provider.id) == planted))
        audited = await connection.scalar(
            select(func.count()).where(
                col(AuditEntry.action) == "balance.discrepancy_found", col(AuditEntry.entity_id) == str(planted)
            )
        )
    mine = {row.provider_id: (row.expected_cents, row.actual_cents) for row in found}
    assert mine[planted] == (1000, 900)
    assert clean not in mine
    assert balance == 900
    assert audited == 2


async def test_cleanup_removes_exactly_the_eligible_rows_among_100000(context: JobContext) -> None:
    queue = f"cleanup-{uuid.uuid4().hex[:6]}"
    n = func.generate_series(1, 100_000).column_valued("n")
    days_ago = {days: func.now() - timedelta(days=days) for days in (40, 10)}
    # n % 4: 0 resolved 40 days ago (eligible), 1 resolved 10 days ago, 2 failed and 3 retrying 40 days ago.
    rows = select(
        literal(queue),
        days_ago[40],
        case({0: DeadLetterStatus.resolved.value, 1: DeadLetterStatus.resolved.value,
              2: DeadLetterStatus.failed.value}, value=n % 4, else_=DeadLetterStatus.retrying.value),
        n % 4 < 2,
        case({0: days_ago[40], 1: days_ago[10]}, value=n % 4),
    )  # fmt: skip
    columns = ["queue_name", "failed_at", "status", "resolved", "resolved_at"]
    async with context.engine.begin() as connection:
        await connection.execute(insert(DeadLetter).from_select(columns, rows))
    counts = await clean_dead_letters(context)
    async with context.engine.connect() as connection:
        left = (
            await connection.execute(
                select(col(DeadLetter.status), func.count())
                .where(col(DeadLetter.queue_name) == queue)
                .group_by(col(DeadLetter.status))
            )
        ).all()
    assert counts["deleted"] >= 25_000
    assert dict(left) == {
        DeadLetterStatus.resolved: 25_000, DeadLetterStatus.failed: 25_000, DeadLetterStatus.retrying: 25_000,
    }  # fmt: skip
