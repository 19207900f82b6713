"""Time for the scheduler, injected: the system clock, or a scaled one (drills and tests run a day in a minute).

A scaled clock is defined by an anchor shared by every replica (real epoch, clock time at it, rate), so
all replicas agree on the time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    rate: float

    def now(self) -> datetime: ...


class SystemClock:
    rate = 1.0

    def now(self) -> datetime:
        return datetime.now(UTC)


class ScaledClock:
    def __init__(self, start: datetime, epoch: float, rate: float) -> None:
        self.start = start if start.tzinfo else start.replace(tzinfo=UTC)
        self.epoch = epoch
        self.rate = rate

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.epoch) * self.rate)


def clock_from(start: datetime | None, epoch: float | None, rate: float) -> Clock:
    if rate == 1.0 and start is None:
        return SystemClock()
    return ScaledClock(start or datetime.now(UTC), epoch if epoch is not None else time.time(), rate)
