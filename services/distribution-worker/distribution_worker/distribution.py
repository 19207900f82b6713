"""Distributing one lead, in one transaction: match, charge, assign, record the message as processed.

Redelivery is harmless: the lead row is locked and its status says whether it was already distributed,
the processed-messages record and the unique (lead, provider) and one-charge-per-assignment constraints
make a second assignment or charge impossible.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from distribution_worker.assignment import Subscription, candidates, crossed_low_balance
from distribution_worker.metrics import DistributionMetrics
from libs import ledger
from libs.messaging.errors import BusinessRuleViolation, TransientError

CONSUMER = "distribution-worker"


@dataclass(frozen=True)
class Assigned:
    assignment_id: uuid.UUID
    provider_id: uuid.UUID
    provider_email: str
    price_cents: int
    balance_after_cents: int | None
    low_balance: bool


@dataclass
class Outcome:
    lead_id: uuid.UUID
    status: str
    assigned: list[Assigned] = field(default_factory=list)
    skipped_providers: list[uuid.UUID] = field(default_factory=list)
    newly_distributed: bool = False


async def _matching(connection: AsyncConnection, category: str, zip_code: str) -> list[Subscription]:
    rows = (
        await connection.execute(
            text(
                "SELECT s.id, s.provider_id, p.email, s.price_cents, p.low_balance_threshold_cents, "
                "s.last_assigned_at, s.created_at, s.daily_cap, "
                "(SELECT count(*) FROM assignments a WHERE a.subscription_id = s.id "
                " AND a.created_at >= date_trunc('day', now())) AS assigned_today "
                "FROM subscriptions s JOIN providers p ON p.id = s.provider_id "
                "WHERE s.status = 'active' AND s.category = :category "
                "AND (:zip = ANY(s.zip_codes) OR (s.zip_prefix IS NOT NULL AND :zip LIKE s.zip_prefix || '%'))"
            ),
            {"category": category, "zip": zip_code},
        )
    ).all()
    return [Subscription(*row) for row in rows]


async def _existing(connection: AsyncConnection, lead_id: uuid.UUID) -> list[Assigned]:
    rows = (
        await connection.execute(
            text(
                "SELECT a.id, a.provider_id, p.email, a.price_cents FROM assignments a "
                "JOIN providers p ON p.id = a.provider_id WHERE a.lead_id = :lead"
            ),
            {"lead": lead_id},
        )
    ).all()
    return [Assigned(row.id, row.provider_id, row.email, row.price_cents, None, False) for row in rows]


async def distribute(
    engine: AsyncEngine,
    lead_id: uuid.UUID,
    *,
    message_id: str,
    approved_by: str | None,
    max_providers: int,
    metrics: DistributionMetrics,
) -> Outcome:
    """`approved_by` None means the event was `lead.submitted`: only a trusted source's lead is distributed."""
    started = time.perf_counter()
    async with engine.begin() as connection:
        lead = (
            await connection.execute(
                text(
                    "SELECT l.status, l.category, l.zip, s.trusted FROM leads l "
                    "JOIN lead_sources s ON s.id = l.source_id WHERE l.id = :id FOR UPDATE OF l"
                ),
                {"id": lead_id},
            )
        ).first()
        if lead is None:
            raise BusinessRuleViolation(f"lead {lead_id} does not exist")
        if lead.status in ("distributed", "unassigned"):
            return Outcome(lead_id, lead.status, await _existing(connection, lead_id))
        if lead.status == "rejected":
            raise BusinessRuleViolation(f"lead {lead_id} was rejected")
        if approved_by is None:
            if lead.status != "submitted" or not lead.trusted:
                return Outcome(lead_id, lead.status)
            await connection.execute(
                text("UPDATE leads SET status = 'approved', decided_at = now() WHERE id = :id"), {"id": lead_id}
            )
            metrics.leads_approved.add(1, {"by": "auto"})
        elif lead.status == "submitted":
            # The gateway publishes before it commits the approval; its commit becomes visible in a moment.
            raise TransientError(f"approval of lead {lead_id} is not committed yet")
        first_time = await connection.scalar(
            text(
                "INSERT INTO processed_messages (consumer, message_id) VALUES (:consumer, :message) "
                "ON CONFLICT DO NOTHING RETURNING 1"
            ),
            {"consumer": CONSUMER, "message": message_id},
        )
        if first_time is None:
            return Outcome(lead_id, lead.status, await _existing(connection, lead_id))
        outcome = Outcome(lead_id, "unassigned", newly_distributed=True)
        for subscription in candidates(await _matching(connection, lead.category, lead.zip)):
            if len(outcome.assigned) >= max_providers:
                break
            assigned = await _charge_and_assign(connection, lead_id, subscription, metrics)
            if assigned is None:
                outcome.skipped_providers.append(subscription.provider_id)
            else:
                outcome.assigned.append(assigned)
        outcome.status = "distributed" if outcome.assigned else "unassigned"
        await connection.execute(
            text("UPDATE leads SET status = :status WHERE id = :id"), {"status": outcome.status, "id": lead_id}
        )
    metrics.distribution_duration.record((time.perf_counter() - started) * 1000)
    metrics.assignments_created.add(len(outcome.assigned))
    metrics.skipped_insufficient_balance.add(len(outcome.skipped_providers))
    if outcome.status == "unassigned":
        metrics.leads_unassigned.add(1)
    return outcome


async def _charge_and_assign(
    connection: AsyncConnection, lead_id: uuid.UUID, subscription: Subscription, metrics: DistributionMetrics
) -> Assigned | None:
    started = time.perf_counter()
    try:
        balance_after = await ledger.debit(connection, subscription.provider_id, subscription.price_cents)
        if balance_after is None:
            await connection.execute(
                text(
                    "UPDATE subscriptions SET status = 'paused', paused_reason = 'insufficient_balance' "
                    "WHERE id = :id AND status = 'active'"
                ),
                {"id": subscription.id},
            )
            return None
        assignment_id = await connection.scalar(
            text(
                "INSERT INTO assignments (lead_id, provider_id, subscription_id, price_cents) "
                "VALUES (:lead, :provider, :subscription, :price) RETURNING id"
            ),
            {"lead": lead_id, "provider": subscription.provider_id, "subscription": subscription.id,
             "price": subscription.price_cents},
        )  # fmt: skip
        await ledger.record_charge(connection, subscription.provider_id, subscription.price_cents, assignment_id)
        await connection.execute(
            text("UPDATE subscriptions SET last_assigned_at = clock_timestamp() WHERE id = :id"),
            {"id": subscription.id},
        )
    except Exception:
        metrics.billing_failures.add(1)
        raise
    finally:
        metrics.billing_duration.record((time.perf_counter() - started) * 1000)
    low = crossed_low_balance(balance_after, subscription.price_cents, subscription.low_balance_threshold_cents)
    return Assigned(
        assignment_id,
        subscription.provider_id,
        subscription.provider_email,
        subscription.price_cents,
        balance_after,
        low,
    )
