"""When a job runs: pure rules over cron, the last claimed slot and the clock. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from croniter import croniter


@dataclass(frozen=True)
class Due:
    slot: datetime
    coalesced: int
    """Earlier slots missed since the last claimed one, folded into this run."""
    catch_up: bool


def latest_slot(cron: str, now: datetime) -> datetime:
    """The most recent slot at or before now."""
    probe = croniter(cron, now + timedelta(microseconds=1))
    return probe.get_prev(datetime)


def next_slot(cron: str, now: datetime) -> datetime:
    return croniter(cron, now).get_next(datetime)


def slots_between(cron: str, after: datetime, until: datetime, limit: int = 10_000) -> int:
    """How many slots lie in (after, until]."""
    count = 0
    iterator = croniter(cron, after)
    while count < limit and iterator.get_next(datetime) <= until:
        count += 1
    return count


def due(cron: str, last_claimed: datetime | None, now: datetime, grace: timedelta) -> Due | None:
    """The slot to claim now, if any: the latest one, when it was not claimed yet and is within the grace
    period. Missed slots before it are coalesced into it (never one run per missed slot)."""
    slot = latest_slot(cron, now)
    if last_claimed is not None and slot <= last_claimed:
        return None
    if now - slot > grace:
        return None
    missed = slots_between(cron, last_claimed, slot) - 1 if last_claimed is not None else 0
    return Due(slot=slot, coalesced=max(0, missed), catch_up=missed > 0)
