"""The DLQ size capture asks for after each batch: the asks made while a read runs make one more read, and that
one waits for the poller's gap, so a busy capture does not recount after every batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service.metrics import UNRESOLVED_PER_QUEUE, DlqSizePoller
from libs.telemetry import DatabaseGauge, setup_telemetry
from tests.services.conftest import eventually


class CountedGauge(DatabaseGauge):
    """The real gauge, its reads counted; each read waits for `release` once it has begun."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(
            setup_telemetry("test-size").meter, "fmhl_dlq_size", "test", engine=engine,
            statement=UNRESOLVED_PER_QUEUE, label="queue", interval_s=60,
        )  # fmt: skip
        self.reads = 0
        self.done = 0
        self.release = asyncio.Event()

    async def refresh(self) -> None:
        self.reads += 1
        await self.release.wait()
        await super().refresh()
        self.done += 1


async def until(condition: Callable[[], bool]) -> None:
    async def holds() -> bool:
        return condition()

    await eventually(holds)


async def started_reading(sizes: DlqSizePoller, gauge: CountedGauge) -> None:
    """One read begun (and waiting for `release`), then asked for again several times meanwhile."""
    sizes.refresh_soon()
    await until(lambda: gauge.reads == 1)
    for _ in range(5):
        sizes.refresh_soon()


async def test_asks_during_a_read_make_one_more_read(engine: AsyncEngine) -> None:
    gauge = CountedGauge(engine)
    sizes = DlqSizePoller(gauge, min_gap_s=0.2)
    await started_reading(sizes, gauge)
    gauge.release.set()
    await until(lambda: gauge.done == 2)
    await sizes.stop()
    assert gauge.reads == 2


async def test_the_read_asked_for_during_a_read_waits_for_the_gap(engine: AsyncEngine) -> None:
    gauge = CountedGauge(engine)
    sizes = DlqSizePoller(gauge, min_gap_s=3600)
    await started_reading(sizes, gauge)
    gauge.release.set()
    await until(lambda: gauge.done >= 1)
    for _ in range(20):
        await asyncio.sleep(0)  # the reader gets every chance to read again: it must be waiting for the gap
    assert gauge.reads == 1
    await sizes.stop()
