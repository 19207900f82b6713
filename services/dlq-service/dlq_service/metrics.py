"""dlq-service instruments: dead letters received and parked, retry outcomes, unresolved entries per queue."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from libs.db.tables import DeadLetter, DeadLetterStatus
from libs.telemetry import DatabaseGauge, Telemetry, counter

# Every queue that ever had an entry is counted, so a queue whose last entry resolved reports 0, not a stale count.
UNRESOLVED_PER_QUEUE: Select[str, int] = select(
    col(DeadLetter.queue_name).label("queue"),
    func.count().filter(col(DeadLetter.status) != DeadLetterStatus.resolved).label("value"),
).group_by(col(DeadLetter.queue_name))

# The capture and retry paths refresh it after a write, so the gauge moves without waiting for the next poll.
DlqSizePoller = DatabaseGauge


@dataclass(frozen=True)
class DlqMetrics:
    received: Counter
    retry_outcomes: Counter
    parked: Counter

    @classmethod
    def create(cls, telemetry: Telemetry) -> DlqMetrics:
        meter = telemetry.meter
        return cls(
            received=counter(meter, "fmhl_dead_letters_received_total", "Dead letters received, by queue and reason."),
            retry_outcomes=counter(
                meter, "fmhl_dlq_retry_outcomes_total", "Retried entries by outcome (succeeded, failed_again)."
            ),
            parked=counter(
                meter, "fmhl_dead_letters_parked_total", "Dead letters PostgreSQL kept refusing, parked in dlq.parking."
            ),
        )


def dlq_size_gauge(telemetry: Telemetry, engine: AsyncEngine, interval_s: float) -> DlqSizePoller:
    return DatabaseGauge(
        telemetry.meter,
        "fmhl_dlq_size",
        "Unresolved dead letters per queue.",
        engine=engine,
        statement=UNRESOLVED_PER_QUEUE,
        label="queue",
        interval_s=interval_s,
    )
