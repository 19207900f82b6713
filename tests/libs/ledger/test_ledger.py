"""Money: a debit takes the price only while the balance covers it; every credit and charge is one ledger row."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import col

from libs import ledger
from libs.db.tables import (
    Assignment,
    BadLeadReport,
    Lead,
    LeadSource,
    LedgerEntry,
    LedgerKind,
    Provider,
    Refund,
    Subscription,
)


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


async def new_provider(engine: AsyncEngine, balance_cents: int) -> uuid.UUID:
    """A provider holding `balance_cents`, written without a ledger row (so only the test's own rows are there)."""
    async with engine.begin() as connection:
        provider_id: uuid.UUID = (
            await connection.execute(
                insert(Provider).returning(col(Provider.id)),
                {"name": "Roofers Inc", "email": "p@example.com", "balance_cents": balance_cents},
            )
        ).scalar_one()
    return provider_id


async def new_assignment(engine: AsyncEngine, provider_id: uuid.UUID, price_cents: int) -> uuid.UUID:
    async with engine.begin() as connection:
        source_id = (await connection.execute(insert(LeadSource).returning(col(LeadSource.id)),
                     {"name": "forms", "api_key_hash": uuid.uuid4().hex})).scalar_one()  # fmt: skip
        lead_id = (await connection.execute(insert(Lead).returning(col(Lead.id)),
                   {"source_id": source_id, "external_id": "x", "category": "roofing", "zip": "94107",
                    "contact": {}})).scalar_one()  # fmt: skip
        subscription_id = (await connection.execute(insert(Subscription).returning(col(Subscription.id)),
                           {"provider_id": provider_id, "category": "roofing", "price_cents": price_cents})
                           ).scalar_one()  # fmt: skip
        assignment_id: uuid.UUID = (await connection.execute(insert(Assignment).returning(col(Assignment.id)),
                                    {"lead_id": lead_id, "provider_id": provider_id,
                                     "subscription_id": subscription_id, "price_cents": price_cents})
                                    ).scalar_one()  # fmt: skip
    return assignment_id


async def new_refund(engine: AsyncEngine, provider_id: uuid.UUID, amount_cents: int) -> uuid.UUID:
    assignment_id = await new_assignment(engine, provider_id, amount_cents)
    async with engine.begin() as connection:
        report_id = (await connection.execute(insert(BadLeadReport).returning(col(BadLeadReport.id)),
                     {"assignment_id": assignment_id, "provider_id": provider_id, "reason": "wrong number"})
                     ).scalar_one()  # fmt: skip
        refund_id: uuid.UUID = (await connection.execute(insert(Refund).returning(col(Refund.id)),
                                {"bad_lead_report_id": report_id, "assignment_id": assignment_id,
                                 "provider_id": provider_id, "amount_cents": amount_cents})).scalar_one()  # fmt: skip
    return refund_id


async def entries(engine: AsyncEngine, provider_id: uuid.UUID) -> list[tuple[LedgerKind, int]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(col(LedgerEntry.kind), col(LedgerEntry.amount_cents))
            .where(col(LedgerEntry.provider_id) == provider_id)
            .order_by(col(LedgerEntry.id))
        )
        return [(row.kind, row.amount_cents) for row in rows]


async def balance(engine: AsyncEngine, provider_id: uuid.UUID) -> int:
    async with engine.connect() as connection:
        return await ledger.balance(connection, provider_id)


async def debit(engine: AsyncEngine, provider_id: uuid.UUID, price_cents: int) -> int | None:
    async with engine.begin() as connection:
        return await ledger.debit(connection, provider_id, price_cents)


async def test_a_debit_may_take_the_whole_balance(engine: AsyncEngine) -> None:
    provider_id = await new_provider(engine, 1000)
    assert await debit(engine, provider_id, 1000) == 0
    assert await balance(engine, provider_id) == 0


async def test_a_debit_a_cent_short_takes_nothing(engine: AsyncEngine) -> None:
    provider_id = await new_provider(engine, 999)
    assert await debit(engine, provider_id, 1000) is None
    assert await balance(engine, provider_id) == 999


async def test_concurrent_debits_never_overdraw(engine: AsyncEngine) -> None:
    provider_id = await new_provider(engine, 1000)
    outcomes = await asyncio.gather(*(debit(engine, provider_id, 100) for _ in range(15)))
    assert sorted(outcomes, key=lambda balance: -1 if balance is None else balance) == [None] * 5 + list(
        range(0, 1000, 100)
    )
    assert await balance(engine, provider_id) == 0


async def test_a_charge_is_recorded_negative_and_once_per_assignment(engine: AsyncEngine) -> None:
    provider_id = await new_provider(engine, 1000)
    assignment_id = await new_assignment(engine, provider_id, 400)
    async with engine.begin() as connection:
        await ledger.record_charge(connection, provider_id, 400, assignment_id)
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await ledger.record_charge(connection, provider_id, 400, assignment_id)
    assert await entries(engine, provider_id) == [(LedgerKind.lead_charge, -400)]


async def test_a_top_up_credits_the_balance_with_one_top_up_row(engine: AsyncEngine) -> None:
    provider_id = await new_provider(engine, 0)
    async with engine.begin() as connection:
        assert await ledger.credit(connection, provider_id, 2500, LedgerKind.top_up) == 2500
    assert await entries(engine, provider_id) == [(LedgerKind.top_up, 2500)]
    assert await balance(engine, provider_id) == 2500


async def test_a_refund_is_credited_once(engine: AsyncEngine) -> None:
    provider_id = await new_provider(engine, 100)
    refund_id = await new_refund(engine, provider_id, 700)
    async with engine.begin() as connection:
        assert await ledger.credit(connection, provider_id, 700, LedgerKind.refund, refund_id=refund_id) == 800
    with pytest.raises(IntegrityError):
        async with engine.begin() as connection:
            await ledger.credit(connection, provider_id, 700, LedgerKind.refund, refund_id=refund_id)
    assert await entries(engine, provider_id) == [(LedgerKind.refund, 700)]
    assert await balance(engine, provider_id) == 800


async def test_crediting_an_unknown_provider_writes_nothing(engine: AsyncEngine) -> None:
    unknown = uuid.uuid4()
    with pytest.raises(ledger.UnknownProvider):
        async with engine.begin() as connection:
            await ledger.credit(connection, unknown, 100, LedgerKind.top_up)
    assert await entries(engine, unknown) == []


@pytest.mark.parametrize(
    ("amount_cents", "kind", "refund_id", "reason"),
    [(0, LedgerKind.top_up, None, "positive"), (-5, LedgerKind.top_up, None, "positive"),
     (100, LedgerKind.lead_charge, None, "not a credit"), (100, LedgerKind.refund, None, "names its refund"),
     (100, LedgerKind.top_up, uuid.uuid4(), "names its refund")],
    ids=["zero", "negative", "a-charge", "refund-without-its-refund", "top-up-naming-a-refund"],
)  # fmt: skip
async def test_a_credit_that_is_not_one_is_refused_before_any_write(
    engine: AsyncEngine, amount_cents: int, kind: LedgerKind, refund_id: uuid.UUID | None, reason: str
) -> None:
    provider_id = await new_provider(engine, 100)
    with pytest.raises(ValueError, match=reason):
        async with engine.begin() as connection:
            await ledger.credit(connection, provider_id, amount_cents, kind, refund_id=refund_id)
    assert await entries(engine, provider_id) == []
    assert await balance(engine, provider_id) == 100
