"""What admin routes receive by name; `principal` is an admin with MFA or the request is refused."""

from __future__ import annotations

from typing import Any

import httpx
from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service.parking import Parking
from dlq_service.queue_stats import QueueStats
from dlq_service.retries import Redriver
from dlq_service.settings import Settings
from dlq_service.signing import RetrySigner
from libs.auth import Tokens, admin_principal
from libs.messaging.publisher import Publisher
from libs.ratelimit import RateLimiter


def _constant(value: Any) -> Provide:
    return Provide(lambda: value, use_cache=True, sync_to_thread=False)


def build_dependencies(
    settings: Settings,
    engine: AsyncEngine,
    publisher: Publisher,
    tokens: Tokens,
    queue_stats: QueueStats,
    http: httpx.AsyncClient,
    redriver: Redriver,
    signer: RetrySigner,
    parking: Parking,
) -> dict[str, Provide]:
    return {
        "settings": _constant(settings),
        "engine": _constant(engine),
        "publisher": _constant(publisher),
        "queue_stats": _constant(queue_stats),
        "http": _constant(http),
        "redriver": _constant(redriver),
        "signer": _constant(signer),
        "parking": _constant(parking),
        "queues_limiter": _constant(RateLimiter(engine, "admin-queues", settings.queues_requests_per_minute)),
        "principal": Provide(admin_principal(tokens)),
    }
