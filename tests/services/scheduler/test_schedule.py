"""When a job runs: the latest slot once, coalesced after downtime, skipped past the grace period."""

from datetime import UTC, datetime, timedelta

from scheduler.schedule import due, latest_slot, next_slot, slots_between

EVERY_5 = "*/5 * * * *"
GRACE = timedelta(minutes=10)


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2030, 1, 1, hour, minute, second, tzinfo=UTC)


def test_the_latest_slot_is_due_once() -> None:
    first = due(EVERY_5, at(9, 55), at(10, 0, 3), GRACE)
    assert first is not None
    assert (first.slot, first.coalesced, first.catch_up) == (at(10, 0), 0, False)
    assert due(EVERY_5, at(10, 0), at(10, 4, 59), GRACE) is None


def test_a_slot_exactly_now_is_due() -> None:
    decision = due(EVERY_5, at(9, 55), at(10, 0), GRACE)
    assert decision is not None
    assert decision.slot == at(10, 0)


def test_thirty_minutes_down_gives_one_catch_up_not_six() -> None:
    decision = due(EVERY_5, at(9, 30), at(10, 1), GRACE)
    assert decision is not None
    assert decision.slot == at(10, 0)
    assert decision.coalesced == 5
    assert decision.catch_up


def test_a_slot_older_than_the_grace_period_is_skipped() -> None:
    assert due("0 3 * * *", None, at(10, 0), GRACE) is None
    assert due(EVERY_5, at(9, 0), at(10, 4), timedelta(minutes=3)) is None


def test_next_and_latest_slots() -> None:
    assert next_slot(EVERY_5, at(10, 0)) == at(10, 5)
    assert latest_slot(EVERY_5, at(10, 4, 59)) == at(10, 0)
    assert latest_slot("0 0 * * 0", at(10, 0)) == datetime(2029, 12, 30, tzinfo=UTC)


def test_the_first_run_of_a_job_never_claimed_is_not_a_catch_up() -> None:
    decision = due("0 3 * * *", None, at(3, 2), GRACE)
    assert decision is not None
    assert (decision.slot, decision.coalesced, decision.catch_up) == (at(3, 0), 0, False)


def test_the_next_slot_is_due_as_soon_as_it_starts() -> None:
    assert due(EVERY_5, at(10, 0), at(10, 4, 59), GRACE) is None
    decision = due(EVERY_5, at(10, 0), at(10, 5), GRACE)
    assert decision is not None
    assert (decision.slot, decision.catch_up) == (at(10, 5), False)


def test_a_slot_at_the_edge_of_the_grace_period_is_still_due() -> None:
    assert due(EVERY_5, at(9, 50), at(10, 3), timedelta(minutes=3)) is not None
    assert due(EVERY_5, at(9, 50), at(10, 3, 1), timedelta(minutes=3)) is None


def test_slots_between_counts_the_end_but_not_the_start() -> None:
    assert slots_between(EVERY_5, at(10, 0), at(10, 30)) == 6
    assert slots_between(EVERY_5, at(10, 0), at(10, 4, 59)) == 0
    assert slots_between(EVERY_5, at(10, 1), at(10, 5)) == 1


def test_slots_between_stops_at_its_limit() -> None:
    assert slots_between("* * * * *", at(0, 0), at(23, 0), limit=100) == 100


def test_a_weekly_job_missed_for_a_month_coalesces_the_missed_weeks() -> None:
    sunday = datetime(2030, 1, 6, tzinfo=UTC)
    decision = due("0 0 * * 0", sunday - timedelta(weeks=4), sunday + timedelta(minutes=1), GRACE)
    assert decision is not None
    assert (decision.slot, decision.coalesced, decision.catch_up) == (sunday, 3, True)
