"""Distributing one lead, in one transaction: match, charge, assign, record the message as processed.

Redelivery is harmless: the lead row is locked and its status says whether it was already distributed,
the processed-messages record and the unique (lead, provider) and one-charge-per-assignment constraints
make a second assignment or charge impossible.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import String, and_, any_, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from distribution_worker.assignment import MatchingSubscription, candidates, crossed_low_balance
from distribution_worker.lead_state import LeadEvent, Step, next_step
from distribution_worker.metrics import DistributionMetrics
from libs import ledger
from libs.db.tables import (
    Assignment,
    Lead,
    LeadSource,
    LeadStatus,
    PausedReason,
    ProcessedMessage,
    Provider,
    Subscription,
    SubscriptionStatus,
)
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
    status: LeadStatus
    assigned: list[Assigned] = field(default_factory=list)
    skipped_providers: list[uuid.UUID] = field(default_factory=list)
    newly_distributed: bool = False


# The transaction's statements, built once: this is the hot path.

LOCK_LEAD = (
    select(col(Lead.status), col(Lead.category), col(Lead.zip), col(LeadSource.trusted))
    .join(LeadSource, col(LeadSource.id) == col(Lead.source_id))
    .where(col(Lead.id) == bindparam("lead_id"))
    .with_for_update(of=Lead)
)

AUTO_APPROVE = (
    update(Lead).where(col(Lead.id) == bindparam("lead_id")).values(status=LeadStatus.approved, decided_at=func.now())
)

FIRST_DELIVERY = (
    insert(ProcessedMessage)
    .values(consumer=CONSUMER, message_id=bindparam("delivery_id"))
    .on_conflict_do_nothing()
    .returning(col(ProcessedMessage.message_id))
)

_ZIP = bindparam("zip", type_=String)
_ASSIGNED_TODAY = (
    select(func.count())
    .where(
        col(Assignment.subscription_id) == col(Subscription.id),
        col(Assignment.created_at) >= func.date_trunc("day", func.now()),
    )
    .scalar_subquery()
)
# The columns are MatchingSubscription's fields, by name.
MATCHING = (
    select(
        col(Subscription.id),
        col(Subscription.provider_id),
        col(Provider.email).label("provider_email"),
        col(Subscription.price_cents),
        col(Provider.low_balance_threshold_cents),
        col(Subscription.last_assigned_at),
        col(Subscription.created_at),
        col(Subscription.daily_cap),
        _ASSIGNED_TODAY.label("assigned_today"),
    )
    .join(Provider, col(Provider.id) == col(Subscription.provider_id))
    .where(
        col(Subscription.status) == SubscriptionStatus.active,
        col(Subscription.category) == bindparam("category"),
        or_(
            any_(col(Subscription.zip_codes)) == _ZIP,
            and_(col(Subscription.zip_prefix).is_not(None), _ZIP.like(col(Subscription.zip_prefix).concat("%"))),
        ),
    )
)

EXISTING = (
    select(col(Assignment.id), col(Assignment.provider_id), col(Provider.email), col(Assignment.price_cents))
    .join(Provider, col(Provider.id) == col(Assignment.provider_id))
    .where(col(Assignment.lead_id) == bindparam("lead_id"))
)

PAUSE_UNPAID = (
    update(Subscription)
    .where(col(Subscription.id) == bindparam("subscription_id"), col(Subscription.status) == SubscriptionStatus.active)
    .values(status=SubscriptionStatus.paused, paused_reason=PausedReason.insufficient_balance)
)

ASSIGN = (
    insert(Assignment)
    .values(
        lead_id=bindparam("lead_id"),
        provider_id=bindparam("provider_id"),
        subscription_id=bindparam("subscription_id"),
        price_cents=bindparam("price_cents"),
    )
    .returning(col(Assignment.id))
)

# clock_timestamp(), not now(): two assignments in one transaction must not tie in the round-robin order.
TOUCH_SUBSCRIPTION = (
    update(Subscription)
    .where(col(Subscription.id) == bindparam("subscription_id"))
    .values(last_assigned_at=func.clock_timestamp())
)

SET_LEAD_STATUS = update(Lead).where(col(Lead.id) == bindparam("lead_id")).values(status=bindparam("status"))


async def _matching(connection: AsyncConnection, category: str, zip_code: str) -> list[MatchingSubscription]:
    rows = (await connection.execute(MATCHING, {"category": category, "zip": zip_code})).mappings()
    return [MatchingSubscription(**row) for row in rows]


async def _existing(connection: AsyncConnection, lead_id: uuid.UUID) -> list[Assigned]:
    rows = await connection.execute(EXISTING, {"lead_id": lead_id})
    return [Assigned(row.id, row.provider_id, row.email, row.price_cents, None, False) for row in rows]


async def distribute(
    engine: AsyncEngine,
    lead_id: uuid.UUID,
    *,
    message_id: str,
    event: LeadEvent,
    max_providers: int,
    metrics: DistributionMetrics,
) -> Outcome:
    started = time.perf_counter()
    async with engine.begin() as connection:
        lead = (await connection.execute(LOCK_LEAD, {"lead_id": lead_id})).first()
        if lead is None:
            raise BusinessRuleViolation(f"lead {lead_id} does not exist")
        match next_step(lead.status, trusted=lead.trusted, event=event):
            case Step.report_existing:
                return Outcome(lead_id, lead.status, await _existing(connection, lead_id))
            case Step.refuse:
                raise BusinessRuleViolation(f"lead {lead_id} was rejected")
            case Step.ignore:
                return Outcome(lead_id, lead.status)
            case Step.retry_later:
                raise TransientError(f"approval of lead {lead_id} is not committed yet")
            case Step.approve_and_distribute:
                await connection.execute(AUTO_APPROVE, {"lead_id": lead_id})
                metrics.leads_approved.add(1, {"by": "auto"})
            case Step.distribute:
                pass
        # This very message was handled before (redelivered after its commit): report, assign nothing again.
        if await connection.scalar(FIRST_DELIVERY, {"delivery_id": message_id}) is None:
            return Outcome(lead_id, lead.status, await _existing(connection, lead_id))
        outcome = await _assign(connection, lead_id, lead.category, lead.zip, max_providers, metrics)
        await connection.execute(SET_LEAD_STATUS, {"lead_id": lead_id, "status": outcome.status})
    metrics.distribution_duration.record((time.perf_counter() - started) * 1000)
    metrics.assignments_created.add(len(outcome.assigned))
    metrics.skipped_insufficient_balance.add(len(outcome.skipped_providers))
    if outcome.status == LeadStatus.unassigned:
        metrics.leads_unassigned.add(1)
    return outcome


async def _assign(
    connection: AsyncConnection,
    lead_id: uuid.UUID,
    category: str,
    zip_code: str,
    max_providers: int,
    metrics: DistributionMetrics,
) -> Outcome:
    outcome = Outcome(lead_id, LeadStatus.unassigned, newly_distributed=True)
    for subscription in candidates(await _matching(connection, category, zip_code)):
        if len(outcome.assigned) >= max_providers:
            break
        assigned = await _charge_and_assign(connection, lead_id, subscription, metrics)
        if assigned is None:
            outcome.skipped_providers.append(subscription.provider_id)
        else:
            outcome.assigned.append(assigned)
    outcome.status = LeadStatus.distributed if outcome.assigned else LeadStatus.unassigned
    return outcome


async def _charge_and_assign(
    connection: AsyncConnection, lead_id: uuid.UUID, subscription: MatchingSubscription, metrics: DistributionMetrics
) -> Assigned | None:
    started = time.perf_counter()
    try:
        balance_after = await ledger.debit(connection, subscription.provider_id, subscription.price_cents)
        if balance_after is None:
            await connection.execute(PAUSE_UNPAID, {"subscription_id": subscription.id})
            return None
        values = {
            "lead_id": lead_id,
            "provider_id": subscription.provider_id,
            "subscription_id": subscription.id,
            "price_cents": subscription.price_cents,
        }
        assignment_id = (await connection.execute(ASSIGN, values)).scalar_one()
        await ledger.record_charge(connection, subscription.provider_id, subscription.price_cents, assignment_id)
        await connection.execute(TOUCH_SUBSCRIPTION, {"subscription_id": subscription.id})
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
