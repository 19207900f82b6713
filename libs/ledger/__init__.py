"""Money movement: every change to a balance is one ledger row plus one atomic balance update, in the caller's
transaction. Amounts are integer cents; a balance never goes negative (conditional update and a check constraint).
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


class UnknownProvider(Exception):
    pass


async def balance(connection: AsyncConnection, provider_id: uuid.UUID) -> int:
    value = await connection.scalar(text("SELECT balance_cents FROM providers WHERE id = :id"), {"id": provider_id})
    if value is None:
        raise UnknownProvider(str(provider_id))
    return int(value)


async def top_up(connection: AsyncConnection, provider_id: uuid.UUID, amount_cents: int) -> int:
    if amount_cents <= 0:
        raise ValueError("amount_cents must be positive")
    new_balance = await connection.scalar(
        text("UPDATE providers SET balance_cents = balance_cents + :amount WHERE id = :id RETURNING balance_cents"),
        {"amount": amount_cents, "id": provider_id},
    )
    if new_balance is None:
        raise UnknownProvider(str(provider_id))
    await connection.execute(
        text("INSERT INTO ledger_entries (provider_id, kind, amount_cents) VALUES (:id, 'top_up', :amount)"),
        {"id": provider_id, "amount": amount_cents},
    )
    return int(new_balance)


async def debit(connection: AsyncConnection, provider_id: uuid.UUID, price_cents: int) -> int | None:
    """Takes the price only if the balance covers it; the new balance, or None when it does not."""
    new_balance = await connection.scalar(
        text(
            "UPDATE providers SET balance_cents = balance_cents - :price "
            "WHERE id = :id AND balance_cents >= :price RETURNING balance_cents"
        ),
        {"price": price_cents, "id": provider_id},
    )
    return None if new_balance is None else int(new_balance)


async def record_charge(
    connection: AsyncConnection, provider_id: uuid.UUID, price_cents: int, assignment_id: uuid.UUID
) -> None:
    """The ledger row of a debit; unique per assignment, so a charge can never be recorded twice."""
    await connection.execute(
        text(
            "INSERT INTO ledger_entries (provider_id, kind, amount_cents, assignment_id) "
            "VALUES (:id, 'lead_charge', :amount, :assignment)"
        ),
        {"id": provider_id, "amount": -price_cents, "assignment": assignment_id},
    )


async def credit_refund(
    connection: AsyncConnection, provider_id: uuid.UUID, amount_cents: int, refund_id: uuid.UUID
) -> int:
    new_balance = await connection.scalar(
        text("UPDATE providers SET balance_cents = balance_cents + :amount WHERE id = :id RETURNING balance_cents"),
        {"amount": amount_cents, "id": provider_id},
    )
    if new_balance is None:
        raise UnknownProvider(str(provider_id))
    await connection.execute(
        text(
            "INSERT INTO ledger_entries (provider_id, kind, amount_cents, refund_id) "
            "VALUES (:id, 'refund', :amount, :refund)"
        ),
        {"id": provider_id, "amount": amount_cents, "refund": refund_id},
    )
    return int(new_balance)
