"""Who gets a lead: one subscription per provider, under its daily cap, in round-robin order; the low-balance edge."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from distribution_worker.assignment import MatchingSubscription, candidates, choose, crossed_low_balance

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def subscription(
    *,
    provider: uuid.UUID | None = None,
    last_assigned: datetime | None = None,
    created: datetime = T0,
    daily_cap: int | None = None,
    assigned_today: int = 0,
    id_: uuid.UUID | None = None,
    balance_cents: int = 10_000,
) -> MatchingSubscription:
    return MatchingSubscription(
        id=id_ or uuid.uuid4(),
        provider_id=provider or uuid.uuid4(),
        provider_email="p@example.com",
        price_cents=100,
        low_balance_threshold_cents=0,
        last_assigned_at=last_assigned,
        created_at=created,
        daily_cap=daily_cap,
        assigned_today=assigned_today,
        balance_cents=balance_cents,
    )


def test_the_provider_who_waited_longest_comes_first() -> None:
    recent = subscription(last_assigned=minutes(30))
    longest = subscription(last_assigned=minutes(10))
    middle = subscription(last_assigned=minutes(20))
    assert candidates([recent, longest, middle]) == [longest, middle, recent]


def test_never_assigned_subscriptions_come_before_any_assigned_one_oldest_first() -> None:
    assigned_long_ago = subscription(last_assigned=minutes(-1000), created=minutes(-2000))
    new = subscription(created=minutes(5))
    older_new = subscription(created=minutes(1))
    assert candidates([assigned_long_ago, new, older_new]) == [older_new, new, assigned_long_ago]


def test_equal_waits_are_ordered_by_age_then_id() -> None:
    low, high = sorted([uuid.uuid4(), uuid.uuid4()])
    younger = subscription(last_assigned=minutes(10), created=minutes(2))
    same_age_high = subscription(last_assigned=minutes(10), created=minutes(1), id_=high)
    same_age_low = subscription(last_assigned=minutes(10), created=minutes(1), id_=low)
    assert candidates([younger, same_age_high, same_age_low]) == [same_age_low, same_age_high, younger]


def test_round_robin_moves_the_last_served_provider_to_the_back() -> None:
    a, b, c = (subscription(last_assigned=minutes(n)) for n in (1, 2, 3))
    first = candidates([a, b, c])[0]
    served_again = subscription(provider=first.provider_id, last_assigned=minutes(4), id_=first.id)
    assert [s.provider_id for s in candidates([served_again, b, c])] == [b.provider_id, c.provider_id, a.provider_id]


def test_a_provider_gets_one_place_with_its_longest_waiting_subscription() -> None:
    provider = uuid.uuid4()
    waiting = subscription(provider=provider, last_assigned=minutes(1))
    fresh = subscription(provider=provider, last_assigned=minutes(50))
    other = subscription(last_assigned=minutes(10))
    assert candidates([fresh, other, waiting]) == [waiting, other]


def test_a_subscription_at_its_daily_cap_is_left_out() -> None:
    capped = subscription(daily_cap=3, assigned_today=3)
    under = subscription(daily_cap=3, assigned_today=2)
    assert candidates([capped, under]) == [under]


def test_a_subscription_without_a_cap_is_never_left_out() -> None:
    uncapped = subscription(daily_cap=None, assigned_today=10_000)
    assert candidates([uncapped]) == [uncapped]


def test_a_capped_subscription_gives_its_providers_place_to_another_of_its_subscriptions() -> None:
    provider = uuid.uuid4()
    capped = subscription(provider=provider, last_assigned=minutes(1), daily_cap=1, assigned_today=1)
    open_ = subscription(provider=provider, last_assigned=minutes(40))
    assert candidates([capped, open_]) == [open_]


def test_no_matching_subscription_gives_no_candidate() -> None:
    assert candidates([]) == []


def test_the_first_candidates_in_fair_order_are_chosen_up_to_the_maximum() -> None:
    first, second, third = (subscription(last_assigned=minutes(n)) for n in (1, 2, 3))
    choice = choose([third, first, second], max_providers=2)
    assert (choice.chosen, choice.unpaid) == ([first, second], [])


def test_a_candidate_that_cannot_pay_is_unpaid_and_the_next_one_takes_its_place() -> None:
    poor = subscription(last_assigned=minutes(1), balance_cents=99)
    second, third = subscription(last_assigned=minutes(2)), subscription(last_assigned=minutes(3))
    choice = choose([poor, second, third], max_providers=2)
    assert (choice.chosen, choice.unpaid) == ([second, third], [poor])


def test_a_balance_equal_to_the_price_pays() -> None:
    exact = subscription(balance_cents=100)
    assert choose([exact], max_providers=1).chosen == [exact]


def test_candidates_after_a_full_lead_are_neither_chosen_nor_unpaid() -> None:
    chosen, poor_after = subscription(last_assigned=minutes(1)), subscription(last_assigned=minutes(2), balance_cents=0)
    choice = choose([chosen, poor_after], max_providers=1)
    assert (choice.chosen, choice.unpaid) == ([chosen], [])


def test_low_balance_is_crossed_by_the_charge_that_goes_below_the_threshold() -> None:
    assert crossed_low_balance(balance_after_cents=900, price_cents=200, threshold_cents=1000)


def test_low_balance_is_crossed_when_the_balance_was_exactly_at_the_threshold() -> None:
    assert crossed_low_balance(balance_after_cents=800, price_cents=200, threshold_cents=1000)


def test_low_balance_is_not_crossed_again_once_below() -> None:
    assert not crossed_low_balance(balance_after_cents=700, price_cents=200, threshold_cents=1000)


def test_a_balance_left_at_the_threshold_is_not_low() -> None:
    assert not crossed_low_balance(balance_after_cents=1000, price_cents=200, threshold_cents=1000)


def test_no_threshold_means_no_low_balance_warning() -> None:
    assert not crossed_low_balance(balance_after_cents=0, price_cents=200, threshold_cents=0)
