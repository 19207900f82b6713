"""Dead letters arriving per queue and hour over the last day: every recorded failure counts, a repeated failure of
an entry too (the console's 24-hour chart)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col

from libs.db.tables import DeadLetter, DeadLetterEvent

HOURS = 24


class QueueArrivals(SQLModel):
    queue: str
    hours: list[datetime]
    """The start of each hour, oldest first, the current hour last."""
    counts: list[int]

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def peak(self) -> int:
        return max(self.counts, default=0)


_HOUR = func.date_trunc("hour", col(DeadLetterEvent.received_at))
_ARRIVALS = (
    select(col(DeadLetter.queue_name).label("queue"), _HOUR.label("hour"), func.count().label("arrived"))
    .select_from(DeadLetterEvent)
    .join(DeadLetter, col(DeadLetter.id) == col(DeadLetterEvent.entry_id))
    .where(col(DeadLetterEvent.received_at) >= bindparam("since"))
    .group_by(col(DeadLetter.queue_name), _HOUR)
)


def hour_starts(now: datetime, hours: int = HOURS) -> list[datetime]:
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return [current - timedelta(hours=back) for back in range(hours - 1, -1, -1)]


def per_queue(
    rows: list[tuple[str, datetime, int]], queues: list[str], now: datetime, hours: int = HOURS
) -> list[QueueArrivals]:
    """Every queue named gets a row, hours without a failure count 0; a queue that is not named but had failures
    (an unknown one) follows them."""
    starts = hour_starts(now, hours)
    index = {start: position for position, start in enumerate(starts)}
    counts: dict[str, list[int]] = {queue: [0] * hours for queue in queues}
    for queue, hour, count in rows:
        position = index.get(hour.astimezone(UTC))
        if position is not None:
            counts.setdefault(queue, [0] * hours)[position] += count
    return [QueueArrivals(queue=queue, hours=starts, counts=values) for queue, values in counts.items()]


async def last_day(engine: AsyncEngine, queues: list[str], now: datetime | None = None) -> list[QueueArrivals]:
    moment = now or datetime.now(UTC)
    since = hour_starts(moment)[0]
    async with engine.connect() as connection:
        rows = (await connection.execute(_ARRIVALS, {"since": since})).all()
    return per_queue([(row.queue, row.hour, row.arrived) for row in rows], queues, moment)
