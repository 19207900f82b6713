"""PostgreSQL access: one async engine per process (asyncpg), its readiness check, and retrying a unit of work
whose pooled connection turned out to be dead."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from libs.health import Check
from libs.settings import ServiceSettings

T = TypeVar("T")

POOL_RECYCLE_S = 1800
"""A pooled connection older than this is replaced at its next checkout, so none outlives a server-side limit
or a load balancer's idle cut for long."""
DISCONNECT_ATTEMPTS = 3
"""Tries of a unit of work whose connection died under it: one dead connection makes SQLAlchemy invalidate the
whole pool, so the second try already runs on a new connection; the third covers a restart racing the second."""


def create_engine(settings: ServiceSettings) -> AsyncEngine:
    # No pool_pre_ping: it costs a BEGIN, a ping and a ROLLBACK on every checkout (most of a short request's
    # statements). A dead connection is found instead by the first statement that uses it; SQLAlchemy then
    # invalidates every pooled connection of that age, and `retry_on_disconnect` runs the unit of work again.
    statement_timeout_ms = settings.db_statement_timeout_ms
    return create_async_engine(
        settings.database_url.get_secret_value(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_recycle=POOL_RECYCLE_S,
        pool_timeout=settings.health_check_timeout_s * 2,
        connect_args={
            "timeout": 5,
            "server_settings": {
                "application_name": settings.service_name,
                "statement_timeout": str(statement_timeout_ms),
                # Lock waits end well before a message handler's timeout, as a retryable error.
                "lock_timeout": str(min(statement_timeout_ms, 5_000)),
                # A frozen or vanished process cannot keep a transaction (and its row locks) open longer than
                # one statement may run: the server ends the session, and everything it held is freed.
                "idle_in_transaction_session_timeout": str(statement_timeout_ms),
                # A vanished client is noticed in about 25 s, not the OS default of two hours, so its
                # session (and anything it holds) is freed.
                "tcp_keepalives_idle": "10",
                "tcp_keepalives_interval": "5",
                "tcp_keepalives_count": "3",
            },
        },
    )


def autocommitting(engine: AsyncEngine) -> AsyncEngine:
    """Each statement its own transaction, with no BEGIN and COMMIT (or ROLLBACK) round trips around it: for a unit
    of work that is one statement. Build it once at wiring: deriving it costs a few hundred microseconds, a
    measurable share of a message's CPU."""
    if engine.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def is_disconnect(error: BaseException) -> bool:
    """The connection was lost (server restarted, session terminated): nothing of the unit of work committed
    unless the loss hit its COMMIT, which is why only idempotent units of work are retried."""
    return isinstance(error, DBAPIError) and error.connection_invalidated


async def retry_on_disconnect(work: Callable[[], Awaitable[T]], attempts: int = DISCONNECT_ATTEMPTS) -> T:
    """Runs `work` (one idempotent transaction) again when its connection turned out to be dead.

    Any other error, and a database that stays unreachable (a refused connection is not a lost one), is
    raised as it is: the caller's retry policy decides.
    """
    for _ in range(attempts - 1):
        try:
            return await work()
        except DBAPIError as error:
            if not is_disconnect(error):
                raise
    return await work()


def database_check(engine: AsyncEngine) -> Check:
    async def ping() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def check() -> Mapping[str, Any]:
        # A stale pooled connection is not an unready database.
        await retry_on_disconnect(ping)
        return {}

    return check
