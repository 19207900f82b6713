"""Who gets a lead: pure rules, no I/O. Fair order is round-robin by last assignment time."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class MatchingSubscription:
    """An active subscription whose category and zip codes match the lead, with its provider's terms."""

    id: uuid.UUID
    provider_id: uuid.UUID
    provider_email: str
    price_cents: int
    low_balance_threshold_cents: int
    last_assigned_at: datetime | None
    created_at: datetime
    daily_cap: int | None
    assigned_today: int
    balance_cents: int
    """The provider's balance when the subscriptions were matched (not locked: the charge itself decides)."""


def _fairness_key(subscription: MatchingSubscription) -> tuple[bool, datetime, datetime, uuid.UUID]:
    never = subscription.last_assigned_at is None
    last = subscription.last_assigned_at or subscription.created_at
    # Never-assigned first, then the longest-waiting; ties broken by age, then id, so the order is total.
    return (not never, last, subscription.created_at, subscription.id)


def candidates(subscriptions: Iterable[MatchingSubscription]) -> list[MatchingSubscription]:
    """One subscription per provider (its longest-waiting one under its daily cap), in fair order."""
    open_ = [s for s in subscriptions if s.daily_cap is None or s.assigned_today < s.daily_cap]
    best: dict[uuid.UUID, MatchingSubscription] = {}
    for subscription in sorted(open_, key=_fairness_key):
        best.setdefault(subscription.provider_id, subscription)
    return sorted(best.values(), key=_fairness_key)


@dataclass(frozen=True)
class Choice:
    chosen: list[MatchingSubscription]
    """Who is charged, in fair order."""
    unpaid: list[MatchingSubscription]
    """Candidates met before the lead was full whose balance did not cover their price: skipped and paused."""


def choose(subscriptions: Iterable[MatchingSubscription], max_providers: int) -> Choice:
    """The first `max_providers` candidates, in fair order, whose balance covers their price."""
    choice = Choice([], [])
    for subscription in candidates(subscriptions):
        if len(choice.chosen) >= max_providers:
            break
        if subscription.balance_cents >= subscription.price_cents:
            choice.chosen.append(subscription)
        else:
            choice.unpaid.append(subscription)
    return choice


def crossed_low_balance(balance_after_cents: int, price_cents: int, threshold_cents: int) -> bool:
    """True once, on the charge that takes the balance from at-or-above the threshold to below it."""
    return threshold_cents > 0 and balance_after_cents + price_cents >= threshold_cents > balance_after_cents
