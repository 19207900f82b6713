"""PostgreSQL access: one async engine per process (asyncpg) and its readiness check."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from libs.health import Check
from libs.settings import ServiceSettings


def create_engine(settings: ServiceSettings) -> AsyncEngine:
    return create_async_engine(
        settings.database_url.get_secret_value(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        pool_timeout=settings.health_check_timeout_s * 2,
        connect_args={
            "timeout": 5,
            "server_settings": {
                "application_name": settings.service_name,
                "statement_timeout": str(settings.db_statement_timeout_ms),
                # Lock waits end well before a message handler's timeout, as a retryable error.
                "lock_timeout": str(min(settings.db_statement_timeout_ms, 5_000)),
                # A vanished client is noticed in about 25 s, not the OS default of two hours, so its
                # session (and anything it holds) is freed.
                "tcp_keepalives_idle": "10",
                "tcp_keepalives_interval": "5",
                "tcp_keepalives_count": "3",
            },
        },
    )


def database_check(engine: AsyncEngine) -> Check:
    async def check() -> Mapping[str, Any]:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        return {}

    return check
