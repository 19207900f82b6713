"""The engine every service uses: no ping per checkout, a terminated session replaced without failing the work,
lock waits and idle transactions bounded by the server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from libs.db import create_engine, retry_on_disconnect
from libs.settings import ServiceSettings, load_settings

SESSIONS_OF = text("SELECT pid FROM pg_stat_activity WHERE application_name = :name")
SETTING = text("SELECT current_setting(:name)")
TERMINATE = text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name")


def settings_for(database_url: str, **overrides: Any) -> ServiceSettings:
    # A name of its own: the test finds (and terminates) exactly this engine's sessions.
    return load_settings(
        ServiceSettings,
        service_name=f"engine-test-{uuid.uuid4().hex[:8]}",
        http_port=8000,
        database_url=database_url,
        rabbitmq_url="amqp://u:p-not-a-placeholder@127.0.0.1/vhost",
        **overrides,
    )


@pytest.fixture
async def admin(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


async def sessions(admin: AsyncEngine, name: str) -> list[int]:
    async with admin.connect() as connection:
        return list(await connection.scalars(SESSIONS_OF, {"name": name}))


async def test_a_checkout_sends_no_ping(database_url: str) -> None:
    settings = settings_for(database_url)
    engine = create_engine(settings)
    sent: list[str] = []

    @event.listens_for(engine.sync_engine.pool, "connect")
    def log_queries(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(lambda record: sent.append(record.query))

    try:
        for _ in range(3):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        # What asyncpg sends by itself: a transaction around each checkout's work, and no empty ping query.
        assert sent
        assert ";" not in sent
    finally:
        await engine.dispose()


async def test_a_terminated_session_is_replaced_and_the_work_done_once_more(
    database_url: str, admin: AsyncEngine
) -> None:
    settings = settings_for(database_url)
    engine = create_engine(settings)
    tries = 0

    async def work() -> int:
        nonlocal tries
        tries += 1
        async with engine.begin() as connection:
            return int(await connection.scalar(text("SELECT 41 + 1")) or 0)

    try:
        await work()
        async with admin.begin() as connection:
            await connection.execute(TERMINATE, {"name": settings.service_name})
        assert await retry_on_disconnect(work) == 42
        assert tries == 3  # the warm-up, the try on the dead connection, the one on a new connection
    finally:
        await engine.dispose()


async def test_an_error_that_is_not_a_lost_connection_is_not_retried(database_url: str) -> None:
    engine = create_engine(settings_for(database_url))
    tries = 0

    async def work() -> None:
        nonlocal tries
        tries += 1
        async with engine.begin() as connection:
            await connection.execute(text("SELECT 1 / 0"))

    try:
        with pytest.raises(DBAPIError, match="division by zero"):
            await retry_on_disconnect(work)
        assert tries == 1
    finally:
        await engine.dispose()


async def test_lock_waits_statements_and_idle_transactions_are_bounded(database_url: str) -> None:
    engine = create_engine(settings_for(database_url, db_statement_timeout_ms=12_000))
    try:
        async with engine.connect() as connection:
            shown = {
                name: await connection.scalar(SETTING, {"name": name})
                for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
            }
        assert shown == {
            "statement_timeout": "12s",
            "lock_timeout": "5s",
            "idle_in_transaction_session_timeout": "12s",
        }
    finally:
        await engine.dispose()


async def test_a_transaction_left_idle_is_ended_by_the_server_and_frees_its_locks(
    database_url: str, admin: AsyncEngine
) -> None:
    settings = settings_for(database_url, db_statement_timeout_ms=300)
    engine = create_engine(settings)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT pg_advisory_xact_lock(4242)"))
            # A frozen process: its transaction stays open, holding the lock, and sends nothing more.
            deadline = time.monotonic() + 10
            while await sessions(admin, settings.service_name):
                assert time.monotonic() < deadline, "the idle transaction's session was not ended"
                await asyncio.sleep(0.05)
            async with admin.connect() as other:
                assert await other.scalar(text("SELECT pg_try_advisory_xact_lock(4242)"))
            with pytest.raises(DBAPIError):
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
