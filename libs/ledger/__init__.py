"""Money movement: every change to a balance is one ledger row plus one atomic balance update, in the caller's
transaction. Amounts are integer cents; a balance never goes negative (conditional update and a check constraint).
"""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, Uuid, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col

from libs.db.tables import LedgerEntry, LedgerKind, Provider

CREDITS = frozenset({LedgerKind.top_up, LedgerKind.refund})

_PROVIDER = bindparam("provider", type_=Uuid)
_CENTS = bindparam("cents", type_=BigInteger)

_BALANCE = select(col(Provider.balance_cents)).where(col(Provider.id) == _PROVIDER)

# The whole rule in one statement: the price is taken only while the balance covers it, so concurrent debits of
# one provider can never overdraw it and nothing is read before it is written.
_DEBIT = (
    update(Provider)
    .where(col(Provider.id) == _PROVIDER, col(Provider.balance_cents) >= _CENTS)
    .values(balance_cents=col(Provider.balance_cents) - _CENTS)
    .returning(col(Provider.balance_cents))
)
_CREDIT = (
    update(Provider)
    .where(col(Provider.id) == _PROVIDER)
    .values(balance_cents=col(Provider.balance_cents) + _CENTS)
    .returning(col(Provider.balance_cents))
)
# `inline()`: the caller needs no generated id back, so no RETURNING is added to the insert.
_ENTRY = insert(LedgerEntry).inline()


class UnknownProvider(Exception):
    pass


async def balance(connection: AsyncConnection, provider_id: uuid.UUID) -> int:
    value = await connection.scalar(_BALANCE, {"provider": provider_id})
    if value is None:
        raise UnknownProvider(str(provider_id))
    return int(value)


async def credit(
    connection: AsyncConnection,
    provider_id: uuid.UUID,
    amount_cents: int,
    kind: LedgerKind,
    *,
    refund_id: uuid.UUID | None = None,
) -> int:
    """Adds to the balance and writes the matching ledger row; the new balance.

    A refund names its refund (the ledger holds one credit per refund); a top-up names none.
    """
    if amount_cents <= 0:
        raise ValueError("amount_cents must be positive")
    if kind not in CREDITS:
        raise ValueError(f"{kind} is not a credit")
    if (kind is LedgerKind.refund) != (refund_id is not None):
        raise ValueError("a refund credit names its refund, and only a refund credit does")
    new_balance = await connection.scalar(_CREDIT, {"provider": provider_id, "cents": amount_cents})
    if new_balance is None:
        raise UnknownProvider(str(provider_id))
    entry = {"provider_id": provider_id, "kind": kind, "amount_cents": amount_cents, "refund_id": refund_id}
    await connection.execute(_ENTRY, entry)
    return int(new_balance)


async def debit(connection: AsyncConnection, provider_id: uuid.UUID, price_cents: int) -> int | None:
    """Takes the price only if the balance covers it; the new balance, or None when it does not."""
    new_balance = await connection.scalar(_DEBIT, {"provider": provider_id, "cents": price_cents})
    return None if new_balance is None else int(new_balance)


async def record_charge(
    connection: AsyncConnection, provider_id: uuid.UUID, price_cents: int, assignment_id: uuid.UUID
) -> None:
    """The ledger row of a debit; unique per assignment, so a charge can never be recorded twice."""
    await connection.execute(
        _ENTRY,
        {
            "provider_id": provider_id,
            "kind": LedgerKind.lead_charge,
            "amount_cents": -price_cents,
            "assignment_id": assignment_id,
        },
    )
