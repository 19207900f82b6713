"""A top-up adds to the balance, writes one ledger row and one audit entry, or nothing at all."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from ingest_gateway import providers, top_ups
from ingest_gateway.errors import NotFound
from libs.db.tables import AuditEntry, LedgerEntry, LedgerKind


async def test_a_top_up_credits_the_balance_with_its_ledger_row_and_audit_entry(
    engine: AsyncEngine, provider_id: uuid.UUID, admin: uuid.UUID
) -> None:
    before = await providers.balance(engine, provider_id)
    assert await top_ups.add(engine, provider_id, 250, admin) == before + 250
    assert await providers.balance(engine, provider_id) == before + 250
    async with engine.connect() as connection:
        entries = (
            await connection.execute(
                select(col(LedgerEntry.kind), col(LedgerEntry.amount_cents))
                .where(col(LedgerEntry.provider_id) == provider_id)
                .order_by(col(LedgerEntry.id))
            )
        ).all()
        audited = (
            (
                await connection.execute(
                    select(col(AuditEntry.actor), col(AuditEntry.details).label("details"))
                    .where(col(AuditEntry.entity_id) == str(provider_id), col(AuditEntry.action) == "balance.topped_up")
                    .order_by(col(AuditEntry.id))
                )
            )
            .mappings()
            .all()
        )
    assert [(entry.kind, entry.amount_cents) for entry in entries][-1] == (LedgerKind.top_up, 250)
    assert sum(entry.amount_cents for entry in entries) == before + 250
    assert (audited[-1]["actor"], audited[-1]["details"]) == (str(admin), {"amount_cents": 250})


async def test_a_top_up_of_an_unknown_provider_is_not_found_and_writes_nothing(
    engine: AsyncEngine, admin: uuid.UUID
) -> None:
    unknown = uuid.uuid4()
    with pytest.raises(NotFound):
        await top_ups.add(engine, unknown, 250, admin)
    async with engine.connect() as connection:
        assert (
            await connection.scalar(select(col(LedgerEntry.id)).where(col(LedgerEntry.provider_id) == unknown)) is None
        )
        assert (
            await connection.scalar(select(col(AuditEntry.id)).where(col(AuditEntry.entity_id) == str(unknown))) is None
        )
