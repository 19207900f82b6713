"""Each refusal of the rules is answered with its own HTTP status; a database that cannot store the request now
with 503 and Retry-After, never 500."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy.exc
from litestar import Litestar, post
from litestar.exceptions import HTTPException, ValidationException
from litestar.testing import TestClient
from sqlalchemy.ext.asyncio import create_async_engine

from ingest_gateway.errors import Conflict, Forbidden, Invalid, NotFound
from ingest_gateway.routes.errors import EXCEPTION_HANDLERS, as_http, retry_later


@pytest.mark.parametrize(
    ("refusal", "status"),
    [(NotFound("lead x not found"), 404), (Conflict("lead is already approved"), 409),
     (Forbidden("only the provider"), 403), (Invalid("bad cursor", field="cursor"), 400)],
)  # fmt: skip
def test_a_refusal_is_answered_with_its_status_and_its_words(refusal: Exception, status: int) -> None:
    with pytest.raises(HTTPException) as answered, as_http():
        raise refusal
    assert (answered.value.status_code, answered.value.detail) == (status, str(refusal))


def test_an_invalid_input_is_named_in_the_answer() -> None:
    with pytest.raises(ValidationException) as answered, as_http():
        raise Invalid("provider_id is required for a ledger statement", field="provider_id", message="required")
    assert answered.value.extra == [{"key": "provider_id", "message": "required"}]


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


def raising(error: Exception) -> Litestar:
    @post("/")
    async def handler() -> None:
        raise error

    return Litestar([handler], exception_handlers=EXCEPTION_HANDLERS)


def test_a_database_outage_is_answered_503_with_retry_after() -> None:
    lost = sqlalchemy.exc.DBAPIError("INSERT", {}, asyncpg.exceptions.CannotConnectNowError("starting up"))
    with TestClient(raising(lost)) as client:
        answered = client.post("/")
    assert (answered.status_code, answered.headers["retry-after"]) == (503, "5")
    assert "nothing was changed" in answered.json()["detail"]


def test_a_bug_stays_a_500_that_tells_nothing() -> None:
    with TestClient(raising(KeyError("secret detail"))) as client:
        answered = client.post("/")
    assert (answered.status_code, answered.json()["detail"]) == (500, "Internal Server Error")


def test_anything_else_passes_through_unchanged() -> None:
    with pytest.raises(KeyError), as_http():
        raise KeyError("a bug is a 500, not a refusal")
