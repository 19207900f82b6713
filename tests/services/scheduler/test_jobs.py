"""The three jobs on real data."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

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
        run_id = await connection.scalar(
            text("INSERT INTO scheduled_job_runs (job, slot, trigger) VALUES ('test', clock_timestamp(), 'manual') "
                 "RETURNING id")
        )  # fmt: skip
    return JobContext(engine, publisher, run_id, retention_days=30, cleanup_batch=5_000)


async def provider(
    engine: AsyncEngine, balance: int, price: int, *, ledger: int | None = None,
    paused_reason: str | None = "insufficient_balance", paused_until: datetime | None = None,
) -> uuid.UUID:  # fmt: skip
    async with engine.begin() as connection:
        provider_id = await connection.scalar(
            text("INSERT INTO providers (name, email, balance_cents) VALUES ('p', 'p@example.com', :b) RETURNING id"),
            {"b": balance},
        )
        if ledger is None:
            ledger = balance
        if ledger:
            await connection.execute(
                text("INSERT INTO ledger_entries (provider_id, kind, amount_cents) VALUES (:p, 'top_up', :a)"),
                {"p": provider_id, "a": ledger},
            )
        await connection.execute(
            text(
                "INSERT INTO subscriptions (provider_id, category, zip_codes, price_cents, status, paused_reason, "
                "paused_until) VALUES (:p, 'c', '{11111}', :price, 'paused', :reason, :until)"
            ),
            {"p": provider_id, "price": price, "reason": paused_reason, "until": paused_until},
        )
    return uuid.UUID(str(provider_id))


async def subscription_status(engine: AsyncEngine, provider_id: uuid.UUID) -> str:
    async with engine.connect() as connection:
        return str(await connection.scalar(text("SELECT status FROM subscriptions WHERE provider_id = :p"),
                                           {"p": provider_id}))  # fmt: skip


async def test_reactivation_wakes_a_topped_up_provider_and_not_one_still_short(context: JobContext) -> None:
    topped_up = await provider(context.engine, balance=5000, price=5000)
    short = await provider(context.engine, balance=4999, price=5000)
    pause_over = await provider(context.engine, balance=0, price=100, paused_reason="manual",
                                paused_until=datetime(2000, 1, 1, tzinfo=UTC))  # fmt: skip
    counts = await reactivate_subscriptions(context)
    assert counts["reactivated"] >= 2
    assert await subscription_status(context.engine, topped_up) == "active"
    assert await subscription_status(context.engine, pause_over) == "active"
    assert await subscription_status(context.engine, short) == "paused"


async def test_reconciliation_finds_a_planted_discrepancy_and_corrects_nothing(context: JobContext) -> None:
    clean = await provider(context.engine, balance=700, price=1)
    planted = await provider(context.engine, balance=900, price=1, ledger=1000)
    first = await reconcile_balances(context)
    second_context = await new_context(context.engine, context.publisher)
    second = await reconcile_balances(second_context)
    assert first["discrepancies"] == second["discrepancies"] >= 1
    async with context.engine.connect() as connection:
        found = (await connection.execute(
            text("SELECT provider_id, expected_cents, actual_cents FROM balance_discrepancies WHERE run_id = :r"),
            {"r": context.run_id},
        )).all()  # fmt: skip
        balance = await connection.scalar(text("SELECT balance_cents FROM providers WHERE id = :p"), {"p": planted})
        audited = await connection.scalar(
            text("SELECT count(*) FROM audit_log WHERE action = 'balance.discrepancy_found' AND entity_id = :p"),
            {"p": str(planted)},
        )
    mine = {row.provider_id: (row.expected_cents, row.actual_cents) for row in found}
    assert mine[planted] == (1000, 900)
    assert clean not in mine
    assert balance == 900
    assert audited == 2


async def test_cleanup_removes_exactly_the_eligible_rows_among_100000(context: JobContext) -> None:
    queue = f"cleanup-{uuid.uuid4().hex[:6]}"
    async with context.engine.begin() as connection:
        # g % 4: 0 resolved 40 days ago (eligible), 1 resolved 10 days ago, 2 failed 40 days ago, 3 retrying.
        await connection.execute(
            text(
                "INSERT INTO dead_letter_queue (queue_name, failed_at, status, resolved, resolved_at) "
                "SELECT :q, now() - interval '40 days', "
                "CASE g % 4 WHEN 0 THEN 'resolved' WHEN 1 THEN 'resolved' WHEN 2 THEN 'failed' ELSE 'retrying' END, "
                "g % 4 IN (0, 1), "
                "CASE g % 4 WHEN 0 THEN now() - interval '40 days' WHEN 1 THEN now() - interval '10 days' END "
                "FROM generate_series(1, 100000) g"
            ),
            {"q": queue},
        )
    counts = await clean_dead_letters(context)
    async with context.engine.connect() as connection:
        left: dict[str, int] = dict((await connection.execute(
            text("SELECT status, count(*) FROM dead_letter_queue WHERE queue_name = :q GROUP BY status"), {"q": queue}
        )).all())  # fmt: skip
    assert counts["deleted"] >= 25_000
    assert left == {"resolved": 25_000, "failed": 25_000, "retrying": 25_000}
