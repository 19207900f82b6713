"""Gauges whose values need I/O to read: refreshed in the background, observed from memory at scrape time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry.metrics import Meter, Observation
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.telemetry.instruments import gauge


class PeriodicRefresh:
    """Runs `refresh` every `interval_s` in the background. A failed refresh is retried at the next interval.

    Stopping never cancels a refresh in flight: cancelling a broker RPC makes aiormq close the channel the
    consumers share, and a driver may swallow the cancellation, so the stop would wait for ever. It lets the
    refresh finish (within `stop_timeout_s`), then ends the loop; a refresh still running by then is cancelled
    and abandoned, so `stop()` returns within twice `stop_timeout_s` whatever the refresh does.
    """

    def __init__(
        self, refresh: Callable[[], Awaitable[None]], interval_s: float, name: str, *, stop_timeout_s: float = 2.0
    ) -> None:
        self.refresh = refresh
        self.interval_s = interval_s
        self.name = name
        self.stop_timeout_s = stop_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(Exception):
                await self.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stopping.set()
        if task is None:
            return
        _, running = await asyncio.wait({task}, timeout=self.stop_timeout_s)
        if running:
            task.cancel()
            await asyncio.wait({task}, timeout=self.stop_timeout_s)


class DatabaseGauge:
    """`name{label}` read from the database: one statement whose rows carry a `label` column and a `value`
    column, re-read every `interval_s` (and at once by `refresh()`, after a write that changes it).

    Every replica reads the same rows, so each reports the whole count, not only what it handled itself. A
    label that disappears from the rows disappears from the gauge; a failed read keeps the last values.
    """

    def __init__(
        self,
        meter: Meter,
        name: str,
        description: str,
        *,
        engine: AsyncEngine,
        statement: Select[*tuple[Any, ...]],
        label: str,
        interval_s: float,
    ) -> None:
        self.engine = engine
        self.statement = statement
        self.label = label
        self.values: Mapping[str, float] = {}
        self._refresh = PeriodicRefresh(self.refresh, interval_s, name)
        gauge(meter, name, description, self._observe)

    def _observe(self) -> list[Observation]:
        return [Observation(value, {self.label: key}) for key, value in self.values.items()]

    async def refresh(self) -> None:
        async with self.engine.connect() as connection:
            rows = (await connection.execute(self.statement)).mappings()
            self.values = {str(row[self.label]): float(row["value"]) for row in rows if row["value"] is not None}

    async def start(self) -> None:
        await self._refresh.start()

    async def stop(self) -> None:
        await self._refresh.stop()
