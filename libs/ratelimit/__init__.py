"""Sliding-window rate limits counted in PostgreSQL, so every replica of a service shares one count.

A per-process counter lets N replicas accept N times the limit, and a dict keyed by whatever the client
sends (an e-mail address, say) grows without bound under a flood of distinct keys. Here the hits of a key
live in `rate_limit_hits`, at most `limit` of them per key within a window; expired rows of every key are
swept once per window, off the per-attempt path.
"""

from __future__ import annotations

import hashlib
import math
import time
from datetime import timedelta

from sqlalchemy import BindParameter, Interval, bindparam, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from libs.db.tables import RateLimitHit

_BUCKET: BindParameter[str] = bindparam("bucket")
_WINDOW_LENGTH = bindparam("window", type_=Interval())

# One transaction per attempt: the advisory lock serialises concurrent attempts on one key (from any
# replica), so two of them can never both take the last free slot of a window.
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:bucket, 0))")
_WINDOW = select(
    func.count().label("hits"),
    # Seconds until the oldest hit in the window leaves it, freeing a slot.
    func.extract("epoch", func.min(col(RateLimitHit.hit_at)) + _WINDOW_LENGTH - func.now()).label("wait"),
).where(col(RateLimitHit.bucket) == _BUCKET, col(RateLimitHit.hit_at) > func.now() - _WINDOW_LENGTH)
_HIT = insert(RateLimitHit).values(bucket=_BUCKET, expires_at=func.now() + _WINDOW_LENGTH)
_SWEEP = delete(RateLimitHit).where(col(RateLimitHit.expires_at) <= func.now())


class RateLimiter:
    """At most `limit` attempts per key within any `window_s` seconds, across every replica."""

    def __init__(self, engine: AsyncEngine, scope: str, limit: int, window_s: float = 60.0) -> None:
        self.engine = engine
        self.scope = scope
        self.limit = limit
        self.window_s = window_s
        self._last_sweep = 0.0

    def bucket(self, key: str) -> str:
        return hashlib.sha256(f"{self.scope}\x00{key}".encode()).hexdigest()

    async def retry_after(self, key: str) -> int | None:
        """Registers an attempt; the seconds to wait when the key is over its limit, else None."""
        params = {"bucket": self.bucket(key), "window": timedelta(seconds=self.window_s)}
        async with self.engine.begin() as connection:
            await connection.execute(_LOCK, params)
            window = (await connection.execute(_WINDOW, params)).one()
            if window.hits >= self.limit:
                return max(1, math.ceil(float(window.wait)))
            await connection.execute(_HIT, params)
        await self._sweep()
        return None

    async def _sweep(self) -> None:
        """Expired hits of keys never seen again, removed at most once per window by each replica."""
        moment = time.monotonic()
        if moment - self._last_sweep < self.window_s:
            return
        self._last_sweep = moment
        async with self.engine.begin() as connection:
            await connection.execute(_SWEEP)
