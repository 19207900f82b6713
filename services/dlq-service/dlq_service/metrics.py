"""dlq-service instruments: dead letters received and parked, retry outcomes, unresolved entries per queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from opentelemetry.metrics import Counter
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from libs.db.tables import DeadLetterGroupCount
from libs.logging import get_logger
from libs.telemetry import DatabaseGauge, Telemetry, counter

log = get_logger("dlq_service.metrics")

# From the counts dead_letter_queue's triggers keep per failure group: a few rows per queue, never the entries.
# Every queue that ever had an entry is counted, so a queue whose last entry resolved reports 0, not a stale count.
UNRESOLVED_PER_QUEUE: Select[str, int] = select(
    col(DeadLetterGroupCount.queue_name).label("queue"),
    func.sum(col(DeadLetterGroupCount.unresolved)).label("value"),
).group_by(col(DeadLetterGroupCount.queue_name))


class DlqSizePoller:
    """fmhl_dlq_size, re-read every interval and soon after a write: the capture and retry paths ask for a
    refresh, and the asks that arrive while one runs make one more read, not one each, at most one read per
    `min_gap_s` (a busy capture commits many batches a second; a scrape comes every few seconds)."""

    def __init__(self, gauge: DatabaseGauge, min_gap_s: float = 1.0) -> None:
        self.gauge = gauge
        self.min_gap_s = min_gap_s
        self._reader: asyncio.Task[None] | None = None
        self._again = False

    def refresh_soon(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._again = True
            return
        self._reader = asyncio.create_task(self._read(), name="dlq-size-refresh")

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._again = False
            started = loop.time()
            try:
                await self.gauge.refresh()
            except Exception as error:  # the gauge keeps its last values; the periodic read tries again
                log.warn("dlq_size.refresh_failed", {"error": f"{type(error).__name__}: {error}"[:300]})
                return
            if not self._again:
                return
            await asyncio.sleep(started + self.min_gap_s - loop.time())

    async def start(self) -> None:
        await self.gauge.start()

    async def stop(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await self.gauge.stop()


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
    return DlqSizePoller(
        DatabaseGauge(
            telemetry.meter,
            "fmhl_dlq_size",
            "Unresolved dead letters per queue.",
            engine=engine,
            statement=UNRESOLVED_PER_QUEUE,
            label="queue",
            interval_s=interval_s,
        )
    )
