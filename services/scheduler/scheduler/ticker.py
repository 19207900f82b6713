"""Each replica's loop: at every slot, try to claim it. The database decides which replica wins (the fence)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from libs.db.tables import RunTrigger
from libs.logging import get_logger
from libs.messaging.publisher import Publisher
from scheduler.clock import Clock
from scheduler.metrics import SchedulerMetrics
from scheduler.pauses import is_paused
from scheduler.runs import claim, last_claimed
from scheduler.schedule import due, next_slot

log = get_logger("scheduler.ticker")


class Ticker:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        clock: Clock,
        schedules: dict[str, tuple[str, bool]],
        metrics: SchedulerMetrics,
        *,
        grace_s: float,
        tick_s: float,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.clock = clock
        self.schedules = {job: cron for job, (cron, enabled) in schedules.items() if enabled}
        self.metrics = metrics
        self.grace = timedelta(seconds=grace_s)
        self.tick_s = tick_s
        self._next_check: dict[str, datetime] = {}
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> None:
        now = self.clock.now()
        for job, cron in self.schedules.items():
            if now < self._next_check.get(job, now):
                continue
            decision = due(cron, await last_claimed(self.engine, job), now, self.grace)
            self._next_check[job] = next_slot(cron, now)
            if decision is None or await is_paused(self.engine, job):
                continue
            trigger = RunTrigger.catch_up if decision.catch_up else RunTrigger.schedule
            run_id = await claim(
                self.engine, self.publisher, job, decision.slot, trigger=trigger, coalesced=decision.coalesced
            )
            if run_id is not None:
                self.metrics.claimed.add(1, {"scheduled_job": job, "trigger": trigger})
                log.info("job.claimed", {"job": job, "slot": decision.slot.isoformat(), "run_id": str(run_id),
                                         "trigger": trigger, "coalesced_slots": decision.coalesced})  # fmt: skip

    async def _loop(self) -> None:
        # Sleeps are in clock seconds: a clock running fast ticks as often per slot as a real one.
        while True:
            try:
                await self.tick()
            except Exception as error:
                log.error("scheduler.tick_failed", error)
            await asyncio.sleep(self.tick_s / self.clock.rate)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="scheduler-ticker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
