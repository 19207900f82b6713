"""Broker numbers per queue from the RabbitMQ management API, cached for a few seconds."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote, urlsplit

import httpx


class QueueStats:
    def __init__(self, management_url: str, vhost: str, cache_s: float) -> None:
        parts = urlsplit(management_url)
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
        self.auth = (parts.username or "", parts.password or "")
        self.vhost = vhost
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def for_queue(self, client: httpx.AsyncClient, queue: str) -> dict[str, Any]:
        """depth, active, consumers, or an `error` naming why the broker did not say."""
        cached = self._cache.get(queue)
        if cached and time.monotonic() - cached[0] < self.cache_s:
            return cached[1]
        try:
            response = await client.get(
                f"{self.base}/api/queues/{quote(self.vhost, safe='')}/{quote(queue, safe='')}", auth=self.auth
            )
            response.raise_for_status()
            body = response.json()
            stats: dict[str, Any] = {
                "depth": body.get("messages_ready", 0),
                "active": body.get("messages_unacknowledged", 0),
                "consumers": body.get("consumers", 0),
            }
        except (httpx.HTTPError, ValueError) as error:
            return {"error": f"broker unavailable: {type(error).__name__}: {error}"[:300]}
        self._cache[queue] = (time.monotonic(), stats)
        return stats


def vhost_of(amqp_url: str) -> str:
    path = urlsplit(amqp_url).path
    return path[1:] if len(path) > 1 else "/"
