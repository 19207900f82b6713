"""Outages: which failures say a dependency is unavailable, and the breaker that pauses, probes and resumes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import asyncpg.exceptions
import pytest
import sqlalchemy.exc
from aiormq.exceptions import ChannelClosed, ChannelInvalidStateError, ConnectionClosed

from libs.messaging.errors import SchemaMismatch, TransientError
from libs.messaging.outage import (
    Breaker,
    BreakerSettings,
    BreakerState,
    Cause,
    ConsumptionPaused,
    Outages,
    Verdict,
    is_unavailable,
)
from libs.messaging.publisher import PublishFailed
from libs.telemetry import setup_telemetry

FAST = BreakerSettings(failure_threshold=3, initial_backoff_s=0.01, max_backoff_s=0.04, probe_timeout_s=0.5, jitter=0)


def wrapped(driver_error: Exception) -> sqlalchemy.exc.DBAPIError:
    """What SQLAlchemy raises around a driver's error."""
    return sqlalchemy.exc.DBAPIError("SELECT 1", {}, driver_error)


def caused_by(error: Exception, cause: BaseException) -> Exception:
    error.__cause__ = cause
    return error


# ---- classification ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
        ConnectionResetError(104, "Connection reset by peer"),
        OSError(113, "No route to host"),
        ConnectionClosed(320, "CONNECTION_FORCED - broker forced connection closure"),
        ChannelInvalidStateError("writer is None"),
        wrapped(asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")),
        wrapped(asyncpg.exceptions.CannotConnectNowError("the database system is starting up")),
        wrapped(asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already")),
        wrapped(asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")),
        sqlalchemy.exc.TimeoutError("QueuePool limit of size 5 overflow 5 reached"),
        caused_by(PublishFailed("no confirm for lead.submitted within 5s"), TimeoutError()),
        caused_by(TransientError("SMTPConnectError: connection refused"), ConnectionRefusedError()),
        ExceptionGroup("startup", [ValueError("unrelated"), ConnectionResetError()]),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_dependency_that_is_not_there_is_an_outage(error: Exception) -> None:
    assert is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        wrapped(asyncpg.exceptions.DeadlockDetectedError("deadlock detected")),
        wrapped(asyncpg.exceptions.SerializationError("could not serialize access")),
        wrapped(asyncpg.exceptions.LockNotAvailableError("canceling statement due to lock timeout")),
        wrapped(asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout")),
        ChannelClosed(404, "NOT_FOUND - no exchange 'missing'"),
        caused_by(PublishFailed("lead.submitted: DeliveryError: unroutable"), RuntimeError("returned")),
        TimeoutError(),
        TransientError("approval not committed yet"),
        ValueError("a bug"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_a_failure_of_this_delivery_is_not_an_outage(error: Exception) -> None:
    assert not is_unavailable(error)


def test_a_permanent_error_is_never_an_outage_whatever_caused_it() -> None:
    assert not is_unavailable(caused_by(SchemaMismatch("lead.submitted: zip"), ConnectionRefusedError()))


def raised_while_handling_a_reset(*, suppress_context: bool) -> TransientError:
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:
            if suppress_context:
                raise TransientError("could not finish") from None
            raise TransientError("could not finish")  # noqa: B904 - the implicit context is the point
    except TransientError as error:
        return error
    raise AssertionError("unreachable")


def test_an_error_raised_while_handling_a_lost_connection_is_an_outage_unless_it_says_from_none() -> None:
    assert is_unavailable(raised_while_handling_a_reset(suppress_context=False))
    assert not is_unavailable(raised_while_handling_a_reset(suppress_context=True))


def test_a_lost_connection_that_sqlalchemy_recognised_is_an_outage() -> None:
    error = wrapped(asyncpg.exceptions.InterfaceError("cannot call Connection.fetch(): connection is closed"))
    assert not is_unavailable(error)
    error.connection_invalidated = True
    assert is_unavailable(error)


# ---- the breaker --------------------------------------------------------------------------------


class Dependency:
    """A probe we control: answers or fails, and counts the times it was asked."""

    def __init__(self) -> None:
        self.up = False
        self.asked = 0

    async def __call__(self) -> Mapping[str, object]:
        self.asked += 1
        if not self.up:
            raise ConnectionRefusedError(111, "refused")
        return {}


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


async def test_a_closed_breaker_admits_at_once_and_counts_an_ordinary_failure() -> None:
    breaker = Breaker("q", settings=FAST)
    assert await breaker.admit()
    assert breaker.failed(TransientError("deadlock")) is Verdict.counted
    assert breaker.state is BreakerState.closed


async def test_an_unavailable_dependency_holds_the_delivery_and_pauses() -> None:
    breaker = Breaker("q", {"database": Dependency()}, FAST)
    assert breaker.failed(ConnectionRefusedError()) is Verdict.held
    assert breaker.paused
    assert breaker.cause is Cause.unavailable
    assert breaker.held_deliveries == 1
    await breaker.stop()


async def test_a_caller_that_classified_the_failure_itself_is_believed() -> None:
    breaker = Breaker("q", {"database": Dependency()}, FAST)
    assert breaker.failed(TransientError("the database is unreachable"), unavailable=True) is Verdict.held
    assert breaker.cause is Cause.unavailable
    await breaker.stop()


async def test_consecutive_ordinary_failures_pause_after_the_threshold_and_a_success_resets_the_count() -> None:
    breaker = Breaker("q", {"database": Dependency()}, FAST)
    for _ in range(FAST.failure_threshold - 1):
        assert breaker.failed(TransientError("lock timeout")) is Verdict.counted
    breaker.succeeded()
    for _ in range(FAST.failure_threshold - 1):
        breaker.failed(TransientError("lock timeout"))
    assert breaker.state is BreakerState.closed
    assert breaker.failed(TransientError("lock timeout")) is Verdict.counted
    assert breaker.paused
    assert breaker.cause is Cause.consecutive_failures
    await breaker.stop()


async def test_a_permanent_failure_neither_pauses_nor_counts_toward_the_threshold() -> None:
    breaker = Breaker("q", settings=FAST)
    for _ in range(FAST.failure_threshold * 2):
        assert breaker.failed(SchemaMismatch("bad body")) is Verdict.counted
    assert breaker.state is BreakerState.closed


async def test_a_paused_breaker_admits_nothing_while_the_probes_fail_and_backs_off() -> None:
    database = Dependency()
    breaker = Breaker("q", {"database": database}, FAST)
    breaker.failed(ConnectionRefusedError())
    waiting = asyncio.create_task(breaker.admit())
    await until(lambda: database.asked >= 4)
    assert not waiting.done()
    assert breaker.backoff_s == FAST.max_backoff_s
    assert "database: ConnectionRefusedError" in (breaker.last_error or "")
    await breaker.stop()
    assert await waiting is False


async def test_when_the_probes_answer_one_delivery_tries_and_its_success_resumes_all() -> None:
    database = Dependency()
    breaker = Breaker("q", {"database": database}, FAST)
    breaker.failed(ConnectionRefusedError())
    waiting = [asyncio.create_task(breaker.admit()) for _ in range(3)]
    await until(lambda: database.asked >= 1)
    database.up = True
    await until(lambda: sum(task.done() for task in waiting) == 1)
    assert breaker.state is BreakerState.half_open
    for _ in range(20):  # the other deliveries stay held while the trial runs, however often the loop turns
        await asyncio.sleep(0)
    assert sum(task.done() for task in waiting) == 1
    breaker.succeeded()
    assert await asyncio.gather(*waiting) == [True, True, True]
    assert not breaker.paused
    assert breaker.backoff_s == FAST.initial_backoff_s


async def test_a_failed_trial_pauses_again_with_a_longer_backoff() -> None:
    database = Dependency()
    breaker = Breaker("q", {"database": database}, FAST)
    breaker.failed(ConnectionRefusedError())
    trial = asyncio.create_task(breaker.admit())
    database.up = True
    assert await trial
    backoff_before = breaker.backoff_s
    assert breaker.failed(ConnectionResetError()) is Verdict.held
    assert breaker.state is BreakerState.open
    assert breaker.backoff_s == min(backoff_before * 2, FAST.max_backoff_s)
    second = asyncio.create_task(breaker.admit())
    assert await second
    assert breaker.failed(TransientError("lock timeout")) is Verdict.counted
    assert breaker.state is BreakerState.open
    await breaker.stop()


async def test_without_probes_the_held_delivery_itself_is_the_probe() -> None:
    breaker = Breaker("q", settings=FAST)
    breaker.failed(ConnectionRefusedError())
    assert await asyncio.wait_for(breaker.admit(), 1)
    assert breaker.state is BreakerState.half_open
    breaker.succeeded()
    assert not breaker.paused


async def test_probes_that_answer_with_nothing_held_resume_at_once() -> None:
    database = Dependency()
    breaker = Breaker("q", {"database": database}, FAST)
    for _ in range(FAST.failure_threshold):
        breaker.failed(TransientError("lock timeout"))
    assert breaker.paused
    database.up = True
    await until(lambda: not breaker.paused)


async def test_a_probe_that_does_not_answer_in_time_counts_as_unavailable() -> None:
    async def hangs() -> Mapping[str, object]:
        await asyncio.sleep(10)
        return {}

    breaker = Breaker("q", {"database": hangs}, BreakerSettings(initial_backoff_s=0.01, probe_timeout_s=0.05))
    breaker.failed(ConnectionRefusedError())
    await until(lambda: "no answer within 0.05s" in (breaker.last_error or ""))
    await breaker.stop()


async def test_a_probe_that_raises_its_own_cancellation_does_not_end_the_probing() -> None:
    """As a channel call does when aiormq tears its connection down under it."""
    answers = iter([asyncio.CancelledError(), asyncio.CancelledError(), None])

    async def torn_down_then_back() -> Mapping[str, object]:
        answer = next(answers, None)
        if answer is not None:
            raise answer
        return {}

    breaker = Breaker("q", {"broker": torn_down_then_back}, FAST)
    for _ in range(FAST.failure_threshold):
        breaker.failed(TransientError("no confirm"))
    assert breaker.paused
    await until(lambda: not breaker.paused)


async def test_a_probe_that_swallows_its_cancellation_cannot_hang_the_probing() -> None:
    release = asyncio.Event()

    async def stubborn() -> Mapping[str, object]:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await release.wait()  # as a client that catches the cancellation and waits on
        return {}

    breaker = Breaker("q", {"broker": stubborn}, BreakerSettings(initial_backoff_s=0.01, probe_timeout_s=0.05))
    breaker.failed(ConnectionRefusedError())
    await until(lambda: breaker.backoff_s >= 0.04)
    assert "no answer within 0.05s" in (breaker.last_error or "")
    release.set()
    await breaker.stop()


async def test_stopping_releases_held_deliveries_but_not_those_of_a_closed_breaker() -> None:
    breaker = Breaker("q", {"database": Dependency()}, FAST)
    breaker.failed(ConnectionRefusedError())
    held = asyncio.create_task(breaker.admit())
    await breaker.stop()
    assert await asyncio.wait_for(held, 1) is False
    closed = Breaker("other", settings=FAST)
    await closed.stop()
    assert await closed.admit()


async def test_readiness_fails_while_a_consumer_is_paused_and_the_gauge_says_so() -> None:
    telemetry = setup_telemetry("svc")
    database = Dependency()
    outages = Outages({"database": database}, telemetry, FAST)
    breaker = outages.breaker("distribution")
    check = outages.check()
    assert await check() == {"consumers": 1}
    breaker.failed(ConnectionRefusedError())
    with pytest.raises(ConsumptionPaused, match="distribution paused"):
        await check()
    exposition = telemetry.exposition().decode()
    assert 'fmhl_consumer_paused{queue="distribution"} 1.0' in exposition
    assert 'fmhl_consumer_pauses_total{cause="unavailable",queue="distribution"} 1.0' in exposition
    assert 'fmhl_consumer_held_total{queue="distribution"} 1.0' in exposition
    database.up = True
    await until(lambda: not breaker.paused)
    assert await check() == {"consumers": 1}
    assert 'fmhl_consumer_paused{queue="distribution"} 0.0' in telemetry.exposition().decode()
    await outages.stop()
