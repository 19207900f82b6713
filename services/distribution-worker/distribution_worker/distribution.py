"""Distributing one lead: read it and its matching subscriptions, choose, then settle everything in one statement.

Two statements per lead and no explicit transaction: one read (the lead and its matching subscriptions), then
the settlement (settlement.py), which is its own transaction and re-checks under lock what the read said.
When the world moved in between (the lead was handled by another delivery, a chosen provider's balance fell),
it writes nothing and the lead is read again.

Redelivery is harmless: the settlement writes only while the lead still has the status read, the
processed-messages record and the unique (lead, provider) and one-charge-per-assignment constraints make a
second assignment or charge impossible.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from sqlalchemy import and_, any_, bindparam, case, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased
from sqlmodel import col

from distribution_worker.assignment import Choice, MatchingSubscription, choose, crossed_low_balance
from distribution_worker.lead_state import LeadEvent, Step, next_step
from distribution_worker.metrics import DistributionMetrics
from distribution_worker.settlement import Settled, settle
from libs.db import autocommitting, retry_on_disconnect
from libs.db.tables import (
    Assignment,
    Lead,
    LeadSource,
    LeadStatus,
    LedgerEntry,
    LedgerKind,
    Provider,
    Subscription,
    SubscriptionStatus,
)
from libs.messaging.errors import BusinessRuleViolation, TransientError

ATTEMPTS = 3
"""Reads and settlements tried for one delivery while the lead or a chosen provider's balance keeps changing
between them; each new try reads again, so it no longer chooses a provider that cannot pay."""


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
    auto_approved: bool = False


class Moved(Exception):
    """The lead or a chosen provider's balance changed between the reads and the settlement."""


# The statements, built once: this is the hot path.

_LEAD = (
    select(col(Lead.status), col(Lead.category), col(Lead.zip), col(LeadSource.trusted))
    .join(LeadSource, col(LeadSource.id) == col(Lead.source_id))
    .where(col(Lead.id) == bindparam("lead_id"))
    .subquery("lead")
)
# Counted only for a capped subscription (CASE evaluates its subquery only when reached), through the index on
# (subscription_id, created_at): today's assignments of one subscription, however many rows the table holds.
_ASSIGNED_TODAY = case(
    (col(Subscription.daily_cap).is_(None), 0),
    else_=select(func.count())
    .where(
        col(Assignment.subscription_id) == col(Subscription.id),
        col(Assignment.created_at) >= func.date_trunc("day", func.now()),
    )
    .scalar_subquery(),
)
# The columns are MatchingSubscription's fields, by name.
_MATCHING = (
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
        col(Provider.balance_cents),
    )
    .join(Provider, col(Provider.id) == col(Subscription.provider_id))
    .where(
        col(Subscription.status) == SubscriptionStatus.active,
        col(Subscription.category) == _LEAD.c.category,
        or_(
            any_(col(Subscription.zip_codes)) == _LEAD.c.zip,
            and_(col(Subscription.zip_prefix).is_not(None), _LEAD.c.zip.like(col(Subscription.zip_prefix).concat("%"))),
        ),
    )
    .lateral("matching")
)
# The lead and its matching subscriptions in one read: a row per subscription, or one without any.
READ_LEAD = (
    select(_LEAD.c.status, _LEAD.c.category, _LEAD.c.zip, _LEAD.c.trusted, *_MATCHING.c)
    .select_from(_LEAD)
    .outerjoin(_MATCHING, true())
)
MATCHING_FIELDS = list(_MATCHING.c.keys())


STATUS = select(col(Lead.status)).where(col(Lead.id) == bindparam("lead_id"))

_CHARGE = aliased(LedgerEntry, name="charge")
_EARLIER = aliased(LedgerEntry, name="earlier")
# The provider's balance right after this assignment's charge: its ledger up to that charge (a provider's ledger
# rows are numbered in its debit order, since each debit holds the provider's row until it commits).
_BALANCE_AFTER_CHARGE = (
    select(func.sum(col(_EARLIER.amount_cents)))
    .where(col(_EARLIER.provider_id) == col(_CHARGE.provider_id), col(_EARLIER.id) <= col(_CHARGE.id))
    .scalar_subquery()
)
# A redelivery finds the lead distributed and reports what was settled, low-balance notices included: they are
# derived from the ledger again, so a notice whose mail was never asked for (its publish failed after the
# commit, or the worker died there) is asked for now.
EXISTING = (
    select(
        col(Assignment.id),
        col(Assignment.provider_id),
        col(Provider.email),
        col(Assignment.price_cents),
        col(Provider.low_balance_threshold_cents),
        _BALANCE_AFTER_CHARGE.label("balance_after_cents"),
    )
    .join(Provider, col(Provider.id) == col(Assignment.provider_id))
    .join(
        _CHARGE,
        and_(col(_CHARGE.assignment_id) == col(Assignment.id), col(_CHARGE.kind) == LedgerKind.lead_charge),
    )
    .where(col(Assignment.lead_id) == bindparam("lead_id"))
)


@dataclass(frozen=True)
class LeadRead:
    status: LeadStatus
    trusted: bool
    matching: list[MatchingSubscription]


async def _read(connection: AsyncConnection, lead_id: uuid.UUID) -> LeadRead | None:
    rows = (await connection.execute(READ_LEAD, {"lead_id": lead_id})).mappings().all()
    if not rows:
        return None
    matching = [MatchingSubscription(**{name: row[name] for name in MATCHING_FIELDS}) for row in rows if row["id"]]
    return LeadRead(LeadStatus(rows[0]["status"]), rows[0]["trusted"], matching)


async def _existing(connection: AsyncConnection, lead_id: uuid.UUID) -> list[Assigned]:
    rows = await connection.execute(EXISTING, {"lead_id": lead_id})
    return [
        Assigned(
            row.id,
            row.provider_id,
            row.email,
            row.price_cents,
            row.balance_after_cents,
            crossed_low_balance(row.balance_after_cents, row.price_cents, row.low_balance_threshold_cents),
        )
        for row in rows
    ]


async def distribute(
    engine: AsyncEngine,
    lead_id: uuid.UUID,
    *,
    message_id: str,
    event: LeadEvent,
    max_providers: int,
    metrics: DistributionMetrics,
) -> Outcome:
    """Idempotent, so a try whose connection died under it is simply run again."""
    started = time.perf_counter()
    autocommit = autocommitting(engine)
    for _ in range(ATTEMPTS):
        try:
            outcome = await retry_on_disconnect(
                lambda: _distribute_once(autocommit, lead_id, message_id, event, max_providers, metrics)
            )
            break
        except Moved:
            continue
    else:
        raise TransientError(f"lead {lead_id} or its providers' balances kept changing while it was distributed")
    if outcome.auto_approved:
        metrics.leads_approved.add(1, {"by": "auto"})
    if outcome.newly_distributed:
        metrics.distribution_duration.record((time.perf_counter() - started) * 1000)
        metrics.assignments_created.add(len(outcome.assigned))
        metrics.skipped_insufficient_balance.add(len(outcome.skipped_providers))
        if outcome.status == LeadStatus.unassigned:
            metrics.leads_unassigned.add(1)
    return outcome


async def _distribute_once(
    engine: AsyncEngine,
    lead_id: uuid.UUID,
    message_id: str,
    event: LeadEvent,
    max_providers: int,
    metrics: DistributionMetrics,
) -> Outcome:
    async with engine.connect() as connection:
        lead = await _read(connection, lead_id)
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
            case Step.approve_and_distribute | Step.distribute as step:
                auto_approved = step is Step.approve_and_distribute
        choice = choose(lead.matching, max_providers)
        settled = await _settle(connection, lead_id, lead.status, message_id, choice, metrics)
        if not settled.recorded:
            if settled.paid and await _status(connection, lead_id) == lead.status:
                # The lead is unchanged, so this very message was handled before: assign nothing again.
                return Outcome(lead_id, lead.status, await _existing(connection, lead_id))
            raise Moved
    return Outcome(
        lead_id,
        LeadStatus.distributed if choice.chosen else LeadStatus.unassigned,
        [_assigned(subscription, settled) for subscription in choice.chosen],
        [subscription.provider_id for subscription in choice.unpaid],
        newly_distributed=True,
        auto_approved=auto_approved,
    )


async def _status(connection: AsyncConnection, lead_id: uuid.UUID) -> LeadStatus | None:
    status = await connection.scalar(STATUS, {"lead_id": lead_id})
    return None if status is None else LeadStatus(status)


async def _settle(
    connection: AsyncConnection,
    lead_id: uuid.UUID,
    read_status: LeadStatus,
    message_id: str,
    choice: Choice,
    metrics: DistributionMetrics,
) -> Settled:
    started = time.perf_counter()
    try:
        return await settle(connection, lead_id, read_status=read_status, message_id=message_id, choice=choice)
    except Exception:
        metrics.billing_failures.add(1)
        raise
    finally:
        # One observation per charge, as when each had its own statement: the count stays the number of charges.
        elapsed_ms = (time.perf_counter() - started) * 1000
        for _ in choice.chosen:
            metrics.billing_duration.record(elapsed_ms)


def _assigned(subscription: MatchingSubscription, settled: Settled) -> Assigned:
    assignment_id, balance_after = settled.balances_after[subscription.provider_id]
    low = crossed_low_balance(balance_after, subscription.price_cents, subscription.low_balance_threshold_cents)
    return Assigned(
        assignment_id, subscription.provider_id, subscription.provider_email, subscription.price_cents, balance_after,
        low,
    )  # fmt: skip
