"""A background refresh stops promptly whatever its refresh is doing, and never cancels one that finishes."""

from __future__ import annotations

import asyncio

from libs.telemetry import PeriodicRefresh


async def test_stopping_lets_a_refresh_in_flight_finish_instead_of_cancelling_it() -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def refresh() -> None:
        started.set()
        await asyncio.sleep(0.1)
        finished.set()

    periodic = PeriodicRefresh(refresh, interval_s=60, name="rpc")
    await periodic.start()
    await asyncio.wait_for(started.wait(), 1)
    await asyncio.wait_for(periodic.stop(), 1)
    assert finished.is_set()


async def test_stopping_ends_the_wait_between_refreshes_at_once() -> None:
    refreshed = asyncio.Event()

    async def refresh() -> None:
        refreshed.set()

    periodic = PeriodicRefresh(refresh, interval_s=3600, name="idle")
    await periodic.start()
    await asyncio.wait_for(refreshed.wait(), 1)
    await asyncio.wait_for(periodic.stop(), 1)


async def test_a_refresh_that_swallows_its_cancellation_cannot_hold_the_stop() -> None:
    release = asyncio.Event()

    async def refresh() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await release.wait()  # as a driver that catches the cancellation and waits on

    periodic = PeriodicRefresh(refresh, interval_s=60, name="stubborn", stop_timeout_s=0.05)
    await periodic.start()
    await asyncio.sleep(0)
    await asyncio.wait_for(periodic.stop(), 1)
    release.set()


async def test_stopping_what_never_started_returns() -> None:
    async def refresh() -> None:
        return None

    await asyncio.wait_for(PeriodicRefresh(refresh, interval_s=1, name="never").stop(), 1)
