"""Every API answers 503 with Retry-After while its database cannot take a request, and 500 for anything else:
a client learns whether retrying the same request later can help."""

from __future__ import annotations

import asyncpg
import sqlalchemy.exc
from litestar import get
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import create_async_engine

from libs.health import Readiness
from libs.settings import ServiceSettings
from libs.telemetry import setup_telemetry
from libs.web.app import create_app, retry_later

SETTINGS = ServiceSettings(
    service_name="web-test",
    http_port=8000,
    database_url="postgresql+asyncpg://fmhl:not-a-placeholder@127.0.0.1:1/none",
    rabbitmq_url="amqp://fmhl:not-a-placeholder@127.0.0.1:1/none",
)


def answer_to(error: Exception) -> tuple[int, str | None, str]:
    @get("/raising", sync_to_thread=False)
    def raising() -> None:
        raise error

    app = create_app(SETTINGS, setup_telemetry("web-test"), Readiness({}), route_handlers=[raising])
    with TestClient(app) as client:
        answered = client.get("/raising")
    return answered.status_code, answered.headers.get("retry-after"), answered.json()["detail"]


def test_a_database_that_cannot_take_the_request_now_is_503_with_retry_after() -> None:
    starting = sqlalchemy.exc.DBAPIError("SELECT 1", {}, asyncpg.exceptions.CannotConnectNowError("starting up"))
    status, retry_after, detail = answer_to(starting)
    assert (status, retry_after) == (503, "5")
    assert "nothing was changed" in detail


def test_a_connection_refused_is_503() -> None:
    assert answer_to(ConnectionRefusedError(111, "Connect call failed"))[0] == 503


def test_a_lock_timeout_is_503() -> None:
    class LockNotAvailable(Exception):
        sqlstate = "55P03"

    timed_out = sqlalchemy.exc.DBAPIError("UPDATE providers", {}, LockNotAvailable("canceling statement"))
    assert answer_to(timed_out)[0] == 503


def test_any_other_error_is_a_500_that_tells_nothing() -> None:
    assert answer_to(RuntimeError("a bug with a secret in it")) == (500, None, "Internal Server Error")


async def database_error_of(url: str, statement: str = "SELECT 1", statement_timeout_ms: int = 0) -> BaseException:
    """What SQLAlchemy raises when the statement meets this database (refused, or failing on the server)."""
    server_settings = {"statement_timeout": str(statement_timeout_ms)}
    engine = create_async_engine(url, connect_args={"timeout": 2, "server_settings": server_settings})
    try:
        async with engine.connect() as connection:
            await connection.exec_driver_sql(statement)
    except Exception as error:
        return error
    finally:
        await engine.dispose()
    raise AssertionError(f"{statement} did not fail")


async def test_a_refused_database_connection_says_retry_later() -> None:
    refused = await database_error_of("postgresql+asyncpg://fmhl:x@127.0.0.1:1/none")
    assert retry_later(refused)


async def test_a_statement_timeout_says_retry_later(database_url: str) -> None:
    timed_out = await database_error_of(database_url, "SELECT pg_sleep(1)", statement_timeout_ms=10)
    assert retry_later(timed_out)


async def test_a_bad_statement_is_no_outage(database_url: str) -> None:
    assert not retry_later(await database_error_of(database_url, "SELECT * FROM no_such_table"))


def test_a_pool_that_gives_no_connection_in_time_says_retry_later() -> None:
    assert retry_later(sqlalchemy.exc.TimeoutError("QueuePool limit of size 5 overflow 5 reached"))
