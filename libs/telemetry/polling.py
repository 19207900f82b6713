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
    """Runs `refresh` every `interval_s` in the background. A failed refresh is retried at the next interval."""

    def __init__(self, refresh: Callable[[], Awaitable[None]], interval_s: float, name: str) -> None:
        self.refresh = refresh
        self.interval_s = interval_s
        self.name = name
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.refresh()
            await asyncio.sleep(self.interval_s)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


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
