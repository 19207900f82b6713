"""An admin's top-up of a provider's balance: the credit, its ledger row and its audit entry, together."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway.errors import NotFound
from libs import audit, ledger
from libs.db.tables import LedgerKind


async def add(engine: AsyncEngine, provider_id: uuid.UUID, amount_cents: int, actor: uuid.UUID) -> int:
    """The provider's new balance in cents."""
    async with engine.begin() as connection:
        try:
            new_balance = await ledger.credit(connection, provider_id, amount_cents, LedgerKind.top_up)
        except ledger.UnknownProvider:
            raise NotFound(f"provider {provider_id} not found") from None
        await audit.record(
            connection, actor=str(actor), action="balance.topped_up", entity_type="provider",
            entity_id=str(provider_id), metadata={"amount_cents": amount_cents},
        )  # fmt: skip
    return new_balance
