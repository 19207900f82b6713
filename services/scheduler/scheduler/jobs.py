"""The three jobs. Each takes the engine and what it needs, does its work in bounded transactions, and returns
counts for the run record."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs import audit
from libs.contracts import SendEmail
from libs.messaging.publisher import Publisher


@dataclass(frozen=True)
class JobContext:
    engine: AsyncEngine
    publisher: Publisher
    run_id: uuid.UUID
    retention_days: int
    cleanup_batch: int


Job = Callable[[JobContext], Awaitable[dict[str, int]]]


async def reactivate_subscriptions(context: JobContext) -> dict[str, int]:
    """Paused for insufficient balance and now covered, or paused until a time that has passed."""
    async with context.engine.begin() as connection:
        rows = (
            await connection.execute(
                text(
                    "UPDATE subscriptions s SET status = 'active', paused_reason = NULL, paused_until = NULL "
                    "FROM providers p WHERE p.id = s.provider_id AND s.status = 'paused' AND ("
                    " (s.paused_reason = 'insufficient_balance' AND p.balance_cents >= s.price_cents)"
                    " OR (s.paused_until IS NOT NULL AND s.paused_until <= now())) "
                    "RETURNING s.id, p.email"
                )
            )
        ).all()
    for subscription_id, email in rows:
        await context.publisher.publish(
            SendEmail(template="subscription_reactivated", to=email, params={"subscription_id": str(subscription_id)}),
            message_id=f"email:subscription_reactivated:{subscription_id}:{context.run_id}",
        )
    return {"reactivated": len(rows)}


async def reconcile_balances(context: JobContext) -> dict[str, int]:
    """Stored balance against the ledger sum for every provider; each difference is recorded, none corrected."""
    async with context.engine.begin() as connection:
        found = (
            await connection.execute(
                text(
                    "INSERT INTO balance_discrepancies (run_id, provider_id, expected_cents, actual_cents) "
                    "SELECT :run, p.id, COALESCE(l.total, 0), p.balance_cents FROM providers p "
                    "LEFT JOIN (SELECT provider_id, SUM(amount_cents) AS total FROM ledger_entries "
                    "GROUP BY provider_id) l ON l.provider_id = p.id "
                    "WHERE p.balance_cents <> COALESCE(l.total, 0) RETURNING provider_id, expected_cents, actual_cents"
                ),
                {"run": context.run_id},
            )
        ).all()
        for provider_id, expected, actual in found:
            await audit.record(
                connection, actor="scheduler", action="balance.discrepancy_found", entity_type="provider",
                entity_id=str(provider_id),
                metadata={"expected_cents": expected, "actual_cents": actual, "run_id": context.run_id},
            )  # fmt: skip
        checked = await connection.scalar(text("SELECT count(*) FROM providers"))
    return {"providers_checked": int(checked or 0), "discrepancies": len(found)}


async def clean_dead_letters(context: JobContext) -> dict[str, int]:
    """Resolved dead letters past retention, in batches so no transaction holds many locks; never unresolved."""
    deleted = 0
    while True:
        async with context.engine.begin() as connection:
            batch = await connection.execute(
                text(
                    "DELETE FROM dead_letter_queue WHERE id IN (SELECT id FROM dead_letter_queue "
                    "WHERE status = 'resolved' AND resolved_at < now() - make_interval(days => :days) "
                    "LIMIT :batch)"
                ),
                {"days": context.retention_days, "batch": context.cleanup_batch},
            )
        deleted += batch.rowcount
        if batch.rowcount < context.cleanup_batch:
            return {"deleted": deleted}


JOBS: dict[str, Job] = {
    "subscription-reactivation": reactivate_subscriptions,
    "balance-reconciliation": reconcile_balances,
    "dlq-cleanup": clean_dead_letters,
}
