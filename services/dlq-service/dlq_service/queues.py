"""The queue overview: each work queue, `dlq` and `dlq.parking` as the broker counts them, beside what the store
holds for each."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import Select, extract, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col

from dlq_service.queue_stats import BrokerNumbers, QueueStats
from libs.db.tables import DeadLetter, DeadLetterGroupCount
from libs.messaging.topology import DLQ_QUEUE, TOPOLOGY


class QueueState(SQLModel):
    name: str
    depth: int | None
    active: int | None
    consumers: int | None
    error: str | None
    failed_last_hour: int
    dlq_size: int
    oldest_unresolved_age_s: float | None


class QueuesOverview(SQLModel):
    queues: list[QueueState]


class StoredCounts(SQLModel):
    """What the store holds for one original queue."""

    queue_name: str
    failed_last_hour: int
    dlq_size: int
    oldest_s: float | None


# Unresolved entries and the oldest of them from what the triggers keep per failure group (one row per group);
# the last hour's failures from idx_dlq_last_failed: no statement reads every entry of a queue.
_KEPT: Select[str, int, float] = (
    select(
        col(DeadLetterGroupCount.queue_name).label("queue_name"),
        func.sum(col(DeadLetterGroupCount.unresolved)).label("dlq_size"),
        extract("epoch", func.now() - func.min(col(DeadLetterGroupCount.first_seen))).label("oldest_s"),
    )
    .where(col(DeadLetterGroupCount.unresolved) > 0)
    .group_by(col(DeadLetterGroupCount.queue_name))
)
_LAST_HOUR: Select[str, int] = (
    select(col(DeadLetter.queue_name).label("queue_name"), func.count().label("failed_last_hour"))
    .where(col(DeadLetter.last_failed_at) > func.now() - timedelta(hours=1))
    .group_by(col(DeadLetter.queue_name))
)


def queue_names() -> list[str]:
    """The work queues, then `dlq`, then `dlq.parking` (what the dlq-service could not record)."""
    return [queue.name for queue in TOPOLOGY.work_queues] + [DLQ_QUEUE, TOPOLOGY.parking_queue]


def queue_state(name: str, broker: BrokerNumbers, stored: StoredCounts | None) -> QueueState:
    """A queue with no entry in the store has none failed, none unresolved and no oldest age."""
    stored = stored or StoredCounts(queue_name=name, failed_last_hour=0, dlq_size=0, oldest_s=None)
    oldest = round(stored.oldest_s, 1) if stored.oldest_s is not None else None
    return QueueState.model_validate(
        broker.model_dump()
        | {"name": name, "failed_last_hour": stored.failed_last_hour, "dlq_size": stored.dlq_size,
           "oldest_unresolved_age_s": oldest}
    )  # fmt: skip


async def overview(engine: AsyncEngine, queue_stats: QueueStats, http: httpx.AsyncClient) -> QueuesOverview:
    async with engine.connect() as connection:
        kept = {row.queue_name: row for row in (await connection.execute(_KEPT)).all()}
        recent = {row.queue_name: row.failed_last_hour for row in (await connection.execute(_LAST_HOUR)).all()}
    stored = {
        name: StoredCounts(
            queue_name=name,
            failed_last_hour=recent.get(name, 0),
            dlq_size=kept[name].dlq_size if name in kept else 0,
            oldest_s=kept[name].oldest_s if name in kept else None,
        )
        for name in kept.keys() | recent.keys()
    }
    return QueuesOverview(
        queues=[queue_state(name, await queue_stats.for_queue(http, name), stored.get(name)) for name in queue_names()]
    )
