"""The scheduler's clock: the system's by default; a scaled one computed from its anchor (start, epoch, rate)."""

import time
from datetime import UTC, datetime, timedelta

from scheduler.clock import ScaledClock, SystemClock, clock_from

START = datetime(2100, 1, 1, tzinfo=UTC)


def test_the_system_clock_is_the_default() -> None:
    clock = clock_from(None, None, 1.0)
    assert isinstance(clock, SystemClock)
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=1)


def test_a_scaled_clock_runs_rate_times_faster_from_its_anchor() -> None:
    clock = clock_from(START, time.time() - 10, 360.0)
    assert isinstance(clock, ScaledClock)
    # Ten real seconds at 360 times are an hour; a second of slack is 360 clock seconds.
    assert START + timedelta(hours=1) <= clock.now() <= START + timedelta(hours=1, seconds=360)


def test_a_naive_start_is_taken_as_utc() -> None:
    assert ScaledClock(datetime(2100, 1, 1), time.time(), 2.0).start == START


def test_a_start_without_a_rate_still_starts_the_clock_there() -> None:
    clock = clock_from(START, None, 1.0)
    assert START <= clock.now() < START + timedelta(seconds=5)
