"""Broker numbers per queue: ready depth and consumers from a passive declare (exact, immediate), unacked
count from the RabbitMQ management API (cached for a few seconds).

The management API publishes a queue's statistics only after its first collection interval: a freshly
started broker answers without `messages_unacknowledged` at all. Such a number is reported as unknown
(`null` with a note), never as a zero that would tell an operator the queue is idle.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import quote, urlsplit

import httpx
from faststream.rabbit import RabbitBroker
from sqlmodel import SQLModel

from libs.messaging.broker import queue_counts

STATS_PENDING = "the broker has not published statistics for this queue yet"


class BrokerNumbers(SQLModel):
    depth: int | None = None
    active: int | None = None
    consumers: int | None = None
    error: str | None = None


class QueueStats:
    def __init__(self, broker: RabbitBroker, management_url: str, vhost: str, cache_s: float, timeout_s: float) -> None:
        parts = urlsplit(management_url)
        self.broker = broker
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
        self.auth = (parts.username or "", parts.password or "")
        self.vhost = vhost
        self.cache_s = cache_s
        self.timeout_s = timeout_s
        self._unacked: dict[str, tuple[float, int]] = {}

    async def for_queue(self, client: httpx.AsyncClient, queue: str) -> BrokerNumbers:
        """depth, active, consumers; a number the broker could not give is null, with the reason beside it."""
        numbers = BrokerNumbers()
        errors: list[str] = []
        try:
            numbers.depth, numbers.consumers = await asyncio.wait_for(queue_counts(self.broker, queue), self.timeout_s)
        except Exception as error:  # any broker failure is reported in the answer, never as a 500
            errors.append(f"broker unavailable: {type(error).__name__}: {error}"[:300])
        try:
            numbers.active = await self._unacknowledged(client, queue)
        except (httpx.HTTPError, ValueError) as error:
            errors.append(f"management API unavailable: {type(error).__name__}: {error}"[:300])
        except LookupError:
            errors.append(STATS_PENDING)
        numbers.error = "; ".join(errors) or None
        return numbers

    async def _unacknowledged(self, client: httpx.AsyncClient, queue: str) -> int:
        cached = self._unacked.get(queue)
        if cached and time.monotonic() - cached[0] < self.cache_s:
            return cached[1]
        response = await client.get(
            f"{self.base}/api/queues/{quote(self.vhost, safe='')}/{quote(queue, safe='')}", auth=self.auth
        )
        response.raise_for_status()
        body = response.json()
        if "messages_unacknowledged" not in body:
            raise LookupError(queue)
        count = int(body["messages_unacknowledged"])
        self._unacked[queue] = (time.monotonic(), count)
        return count


def vhost_of(amqp_url: str) -> str:
    path = urlsplit(amqp_url).path
    return path[1:] if len(path) > 1 else "/"
