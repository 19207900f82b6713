"""dlq-service instruments: dead letters received, and unresolved entries per original queue."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from opentelemetry.metrics import CallbackOptions, Counter, Observation
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.telemetry import PeriodicRefresh, Telemetry


@dataclass
class DlqMetrics:
    received: Counter
    retry_outcomes: Counter
    sizes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def create(cls, telemetry: Telemetry) -> DlqMetrics:
        meter = telemetry.meter
        metrics = cls(
            received=meter.create_counter(
                "fmhl_dead_letters_received_total", unit="", description="Dead letters received, by queue and reason."
            ),
            retry_outcomes=meter.create_counter(
                "fmhl_dlq_retry_outcomes_total",
                unit="",
                description="Retried entries by outcome (succeeded, failed_again).",
            ),
        )
        meter.create_observable_gauge(
            "fmhl_dlq_size", callbacks=[metrics._observe], unit="", description="Unresolved dead letters per queue."
        )
        return metrics

    def _observe(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(count, {"queue": queue}) for queue, count in self.sizes.items()]


class DlqSizePoller:
    """Recounts unresolved entries per queue; a queue whose last entry resolved reports 0, not a stale count."""

    def __init__(self, engine: AsyncEngine, metrics: DlqMetrics, interval_s: float) -> None:
        self.engine = engine
        self.metrics = metrics
        self._refresh = PeriodicRefresh(self.refresh, interval_s, "dlq-size")
        self.start = self._refresh.start
        self.stop = self._refresh.stop

    async def refresh(self) -> None:
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT queue_name, count(*) FILTER (WHERE status <> 'resolved') FROM dead_letter_queue "
                    "GROUP BY queue_name"
                )
            )
            self.metrics.sizes = {queue: int(count) for queue, count in rows}
