"""The three jobs. Each takes the engine and what it needs, does its work in bounded transactions, and returns
counts for the run record."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Interval, Uuid, and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from libs import audit
from libs.contracts import SendEmail
from libs.db.tables import (
    BalanceDiscrepancy,
    DeadLetter,
    DeadLetterStatus,
    LedgerEntry,
    PausedReason,
    Provider,
    Subscription,
    SubscriptionStatus,
)
from libs.messaging.publisher import Publisher


@dataclass(frozen=True)
class JobContext:
    engine: AsyncEngine
    publisher: Publisher
    run_id: uuid.UUID
    retention_days: int
    cleanup_batch: int


Job = Callable[[JobContext], Awaitable[dict[str, int]]]

# Paused for insufficient balance and now covered, or paused until a time that has passed.
REACTIVATE = (
    update(Subscription)
    .where(
        col(Provider.id) == col(Subscription.provider_id),
        col(Subscription.status) == SubscriptionStatus.paused,
        or_(
            and_(
                col(Subscription.paused_reason) == PausedReason.insufficient_balance,
                col(Provider.balance_cents) >= col(Subscription.price_cents),
            ),
            and_(col(Subscription.paused_until).is_not(None), col(Subscription.paused_until) <= func.now()),
        ),
    )
    .values(status=SubscriptionStatus.active, paused_reason=None, paused_until=None)
    .returning(col(Subscription.id), col(Provider.email))
)

_LEDGER_TOTALS = (
    select(col(LedgerEntry.provider_id), func.sum(col(LedgerEntry.amount_cents)).label("total"))
    .group_by(col(LedgerEntry.provider_id))
    .subquery()
)
_EXPECTED = func.coalesce(_LEDGER_TOTALS.c.total, 0)
RECORD_DISCREPANCIES = (
    insert(BalanceDiscrepancy)
    .from_select(
        ["run_id", "provider_id", "expected_cents", "actual_cents"],
        select(bindparam("run_id", type_=Uuid), col(Provider.id), _EXPECTED, col(Provider.balance_cents))
        .outerjoin(_LEDGER_TOTALS, _LEDGER_TOTALS.c.provider_id == col(Provider.id))
        .where(col(Provider.balance_cents) != _EXPECTED),
    )
    .returning(
        col(BalanceDiscrepancy.provider_id),
        col(BalanceDiscrepancy.expected_cents),
        col(BalanceDiscrepancy.actual_cents),
    )
)

COUNT_PROVIDERS = select(func.count()).select_from(Provider)

# Never an unresolved one; a batch at a time, so no transaction holds many locks.
_EXPIRED = (
    select(col(DeadLetter.id))
    .where(
        col(DeadLetter.status) == DeadLetterStatus.resolved,
        col(DeadLetter.resolved_at) < func.now() - bindparam("retention", type_=Interval),
    )
    .limit(bindparam("batch"))
)
DELETE_EXPIRED = delete(DeadLetter).where(col(DeadLetter.id).in_(_EXPIRED))


async def reactivate_subscriptions(context: JobContext) -> dict[str, int]:
    async with context.engine.begin() as connection:
        reactivated = (await connection.execute(REACTIVATE)).all()
    for row in reactivated:
        await context.publisher.publish(
            SendEmail(template="subscription_reactivated", to=row.email, params={"subscription_id": str(row.id)}),
            message_id=f"email:subscription_reactivated:{row.id}:{context.run_id}",
        )
    return {"reactivated": len(reactivated)}


async def reconcile_balances(context: JobContext) -> dict[str, int]:
    """Stored balance against the ledger sum for every provider; each difference is recorded, none corrected."""
    async with context.engine.begin() as connection:
        found = (await connection.execute(RECORD_DISCREPANCIES, {"run_id": context.run_id})).all()
        for row in found:
            await audit.record(
                connection, actor="scheduler", action="balance.discrepancy_found", entity_type="provider",
                entity_id=str(row.provider_id),
                metadata={"expected_cents": row.expected_cents, "actual_cents": row.actual_cents,
                          "run_id": context.run_id},
            )  # fmt: skip
        checked = await connection.scalar(COUNT_PROVIDERS)
    return {"providers_checked": checked or 0, "discrepancies": len(found)}


async def clean_dead_letters(context: JobContext) -> dict[str, int]:
    """Resolved dead letters past retention."""
    retention = timedelta(days=context.retention_days)
    deleted = 0
    while True:
        async with context.engine.begin() as connection:
            batch = await connection.execute(DELETE_EXPIRED, {"retention": retention, "batch": context.cleanup_batch})
        deleted += batch.rowcount
        if batch.rowcount < context.cleanup_batch:
            return {"deleted": deleted}


JOBS: dict[str, Job] = {
    "subscription-reactivation": reactivate_subscriptions,
    "balance-reconciliation": reconcile_balances,
    "dlq-cleanup": clean_dead_letters,
}
