"""What routes receive by name: the process's engine, publisher, tokens and metrics, and the caller's identity."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway.accounts import AuthenticatedSource, lead_source_for
from ingest_gateway.metrics import GatewayMetrics
from ingest_gateway.settings import Settings
from libs.auth import Principal, Tokens, bearer_principal
from libs.messaging.publisher import Publisher
from libs.ratelimit import RateLimiter


def _constant(value: Any) -> Provide:
    return Provide(lambda: value, use_cache=True, sync_to_thread=False)


def build_dependencies(
    settings: Settings, engine: AsyncEngine, publisher: Publisher, tokens: Tokens, metrics: GatewayMetrics
) -> dict[str, Provide]:
    async def principal(request: Request[Any, Any, Any]) -> Principal:
        return bearer_principal(request, tokens)

    async def lead_source(request: Request[Any, Any, Any]) -> AuthenticatedSource:
        api_key = request.headers.get("x-api-key")
        if not api_key:
            raise NotAuthorizedException("missing X-API-Key header")
        source = await lead_source_for(engine, api_key)
        if source is None:
            raise NotAuthorizedException("unknown API key")
        return source

    return {
        "settings": _constant(settings),
        "engine": _constant(engine),
        "publisher": _constant(publisher),
        "tokens": _constant(tokens),
        "metrics": _constant(metrics),
        "throttle": _constant(RateLimiter(engine, "login", settings.login_attempts_per_minute)),
        "principal": Provide(principal),
        "lead_source": Provide(lead_source),
    }
