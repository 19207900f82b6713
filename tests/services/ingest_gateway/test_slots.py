"""The lead intake's admission: at most the pool's size of leads at the database at once, in order of arrival, and
a wait that ends in the same TimeoutError (503) as a pool checkout that timed out."""

from __future__ import annotations

import asyncio

import pytest

from ingest_gateway.submissions import Slots


async def test_a_request_beyond_the_free_slots_waits_for_one() -> None:
    slots = Slots(1, wait_s=5)
    entered = asyncio.Event()

    async def second() -> None:
        async with slots:
            entered.set()

    async with slots:
        waiting = asyncio.create_task(second())
        await asyncio.sleep(0)
        assert not entered.is_set()
    await asyncio.wait_for(waiting, timeout=5)
    assert entered.is_set()


async def test_requests_get_their_slots_in_order_of_arrival() -> None:
    slots = Slots(1, wait_s=5)
    order: list[int] = []

    async def request(number: int) -> None:
        async with slots:
            order.append(number)

    async with slots:
        waiting = [asyncio.create_task(request(number)) for number in range(5)]
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=5)
    assert order == [0, 1, 2, 3, 4]


async def test_a_wait_longer_than_wait_s_ends_in_a_timeout() -> None:
    slots = Slots(1, wait_s=0.01)
    async with slots:
        with pytest.raises(TimeoutError):
            async with slots:
                pass
    async with slots:  # the timed-out request took nothing: the one slot is free again
        pass
