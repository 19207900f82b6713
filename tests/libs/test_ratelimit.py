"""Rate limits counted in PostgreSQL: replicas share one count, a window slides, and nothing piles up."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import col

from libs.db.tables import RateLimitHit
from libs.ratelimit import RateLimiter


@pytest.fixture
async def replicas(database_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines, as two service replicas would have."""
    first, second = create_async_engine(database_url), create_async_engine(database_url)
    yield first, second
    await first.dispose()
    await second.dispose()


async def rows_of(engine: AsyncEngine, limiter: RateLimiter, keys: list[str]) -> int:
    buckets = [limiter.bucket(key) for key in keys]
    async with engine.connect() as connection:
        count = await connection.scalar(select(func.count()).where(col(RateLimitHit.bucket).in_(buckets)))
    return int(count or 0)


async def test_two_replicas_share_one_count(replicas: tuple[AsyncEngine, AsyncEngine]) -> None:
    scope = f"test-{uuid.uuid4().hex[:8]}"
    first, second = RateLimiter(replicas[0], scope, 5), RateLimiter(replicas[1], scope, 5)
    answers = [await first.retry_after("someone@example.com") for _ in range(3)]
    answers += [await second.retry_after("someone@example.com") for _ in range(3)]
    assert answers[:5] == [None] * 5
    wait = answers[5]
    assert wait is not None
    assert 1 <= wait <= 60
    # Another key has its own count.
    assert await first.retry_after("someone-else@example.com") is None


async def test_concurrent_attempts_never_take_more_than_the_limit(replicas: tuple[AsyncEngine, AsyncEngine]) -> None:
    scope = f"test-{uuid.uuid4().hex[:8]}"
    limiters = [RateLimiter(replicas[0], scope, 10), RateLimiter(replicas[1], scope, 10)]
    answers = await asyncio.gather(*(limiters[i % 2].retry_after("203.0.113.9") for i in range(30)))
    assert answers.count(None) == 10
    assert all(isinstance(wait, int) and wait >= 1 for wait in answers if wait is not None)


async def test_the_window_slides(replicas: tuple[AsyncEngine, AsyncEngine]) -> None:
    limiter = RateLimiter(replicas[0], f"test-{uuid.uuid4().hex[:8]}", 2, window_s=1.0)
    assert [await limiter.retry_after("key") for _ in range(2)] == [None, None]
    started = asyncio.get_running_loop().time()
    assert await limiter.retry_after("key") == 1
    # A refused attempt registers nothing, so asking again does not push the window further.
    async with asyncio.timeout(5):
        while await limiter.retry_after("key") is not None:
            await asyncio.sleep(0.05)
    assert asyncio.get_running_loop().time() - started < 1.5


async def test_a_flood_of_distinct_keys_leaves_nothing_behind(replicas: tuple[AsyncEngine, AsyncEngine]) -> None:
    # A window far longer than the flood takes, so no sweep runs before the count below.
    limiter = RateLimiter(replicas[0], f"test-{uuid.uuid4().hex[:8]}", 3, window_s=3.0)
    keys = [f"flood-{n}@example.com" for n in range(100)]
    for key in keys:
        assert await limiter.retry_after(key) is None
    assert await rows_of(replicas[0], limiter, keys) == 100
    # Only attempts sweep: the rows go once the window has passed and some later attempt comes in.
    async with asyncio.timeout(10):
        while await rows_of(replicas[0], limiter, keys) > 0:
            assert await limiter.retry_after(f"later-{uuid.uuid4().hex}") is None
            await asyncio.sleep(0.1)


def test_keys_are_stored_as_digests_never_as_given() -> None:
    # The engine is never connected: computing a bucket needs no database.
    engine = create_async_engine("postgresql+asyncpg://unused@127.0.0.1/unused")
    bucket = RateLimiter(engine, "login", 10).bucket("someone@example.com|198.51.100.7")
    assert bucket == hashlib.sha256(b"login\x00someone@example.com|198.51.100.7").hexdigest()
    assert RateLimiter(engine, "admin-queues", 10).bucket("someone@example.com|198.51.100.7") != bucket
