"""Outages pause consumption instead of burning attempts: a dependency failure holds its delivery uncounted."""

from __future__ import annotations

import asyncio
import enum
import errno
import random
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import sqlalchemy.exc
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelClosed, ChannelInvalidStateError
from opentelemetry.metrics import Counter, Observation

from libs.health import Check
from libs.logging import get_logger
from libs.messaging.errors import is_permanent
from libs.messaging.publisher import PublishFailed
from libs.telemetry import Telemetry, counter, gauge

log = get_logger("fmhl.outage")

# SQLSTATEs that say "the database is not there" rather than "this statement failed": classes 08 (connection),
# 53 (insufficient resources: 53300 too many connections), 58 (system error); 57P01 terminated by an
# administrator, 57P02 crash shutdown, 57P03 cannot connect now (starting or stopping). A deadlock (40P01),
# a serialization failure (40001), a lock or statement timeout (55P03, 57014) are not: they keep their retries.
UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53", "58"})
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
UNAVAILABLE_ERRNOS = frozenset({
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT, errno.ENOTCONN,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN,
})  # fmt: skip


def _linked(error: BaseException) -> Iterator[BaseException]:
    """The error and everything it was caused by, as a traceback would print it, plus a driver error that
    SQLAlchemy wraps (`orig`) and the members of an exception group."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        original = getattr(current, "orig", None)
        if isinstance(original, BaseException):
            pending.append(original)
        if current.__cause__ is not None:
            pending.append(current.__cause__)
        elif current.__context__ is not None and not current.__suppress_context__:
            pending.append(current.__context__)


def _says_unavailable(error: BaseException) -> bool:
    if isinstance(error, ConnectionError | socket.gaierror | sqlalchemy.exc.TimeoutError):
        # Refused, reset or lost connections (the AMQP and SMTP clients' errors are ConnectionErrors too),
        # an unresolvable host, and a pool with no connection to give within its timeout.
        return True
    if isinstance(error, OSError) and error.errno in UNAVAILABLE_ERRNOS:
        return True
    if isinstance(error, ChannelInvalidStateError) and not isinstance(error, ChannelClosed):
        # The channel's connection is gone; a channel the broker closed for a reason (404, 406) is not an outage.
        return True
    if isinstance(error, PublishFailed) and isinstance(error.__cause__, TimeoutError):
        # Nothing confirmed within the publish timeout: a black-holed link or a broker blocking publishers.
        return True
    if getattr(error, "connection_invalidated", False) is True:
        # SQLAlchemy recognised the driver's error as a lost connection.
        return True
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and (
        sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES or sqlstate in UNAVAILABLE_SQLSTATES
    )


def is_unavailable(error: BaseException) -> bool:
    """True when the failure says a dependency (database, broker, SMTP server) is not there, so retrying this
    delivery now cannot help and must not cost it an attempt. A permanent error never says so."""
    if is_permanent(error):
        return False
    return any(_says_unavailable(linked) for linked in _linked(error))


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


def channel_open(raw: AbstractIncomingMessage) -> bool:
    """False once the channel a delivery came on has closed: the broker has returned it to its queue already,
    so a held delivery is dropped rather than handled twice."""
    try:
        return not raw.channel.is_closed
    except ChannelInvalidStateError:
        return False


class BreakerState(enum.StrEnum):
    closed = "closed"
    open = "open"
    """Paused: no delivery is handled; the dependencies are probed with growing backoff."""
    half_open = "half_open"
    """The probes answered: one delivery tries; its success closes the breaker, its failure opens it again."""


class Cause(enum.StrEnum):
    unavailable = "unavailable"
    consecutive_failures = "consecutive_failures"


class Verdict(enum.StrEnum):
    counted = "counted"
    """An ordinary failure: the delivery spends an attempt (retried with backoff, or dead-lettered)."""
    held = "held"
    """A dependency is unavailable: the delivery stays unacked and uncounted, handled again once resumed."""


@dataclass(frozen=True)
class BreakerSettings:
    failure_threshold: int = 5
    """Consecutive transient failures (of any kind, no success between) that pause consumption too."""
    initial_backoff_s: float = 1.0
    max_backoff_s: float = 15.0
    """Bounds the time from a dependency's return to the next probe, hence to resumption."""
    probe_timeout_s: float = 2.0
    """A probe (e.g. `SELECT 1`) not answered by then counts as unavailable."""
    jitter: float = 0.2
    """Each wait is stretched or shrunk by up to this fraction, so replicas do not probe in step."""


@dataclass(frozen=True)
class BreakerMetrics:
    pauses: Counter
    held: Counter


class Breaker:
    """The circuit breaker of one consumed queue. The consumer policy asks `admit()` before handling a delivery
    and reports each outcome with `succeeded()` or `failed(error)`; `failed` answers whether the delivery is
    counted as an attempt or held. Held deliveries stay unacked, so prefetch stops new deliveries meanwhile."""

    def __init__(
        self,
        queue: str,
        probes: Mapping[str, Check] | None = None,
        settings: BreakerSettings | None = None,
        metrics: BreakerMetrics | None = None,
    ) -> None:
        """Without probes, the first held delivery is itself the probe, tried after each backoff."""
        self.queue = queue
        self.probes = dict(probes or {})
        self.settings = settings or BreakerSettings()
        self.metrics = metrics
        self.state = BreakerState.closed
        self.cause: Cause | None = None
        self.last_error: str | None = None
        self.consecutive_failures = 0
        self.backoff_s = self.settings.initial_backoff_s
        self.pauses: dict[Cause, int] = dict.fromkeys(Cause, 0)
        self.held_deliveries = 0
        self.stopping = False
        self._paused_at: float | None = None
        self._trial_running = False
        self._waiting = 0
        self._changed = asyncio.Event()
        self._prober: asyncio.Task[None] | None = None
        self._asked: set[asyncio.Future[Mapping[str, object]]] = set()
        """Probes under way, kept referenced until they end (an abandoned one may end late)."""

    @property
    def paused(self) -> bool:
        return self.state is not BreakerState.closed

    @property
    def paused_for_s(self) -> float:
        return 0.0 if self._paused_at is None else time.monotonic() - self._paused_at

    async def admit(self) -> bool:
        """Waits while paused. True: handle the delivery now. False: the service is stopping while paused, so
        the delivery goes back to the broker unhandled."""
        while True:
            if self.state is BreakerState.closed:
                return True
            if self.stopping:
                return False
            if self.state is BreakerState.half_open and not self._trial_running:
                self._trial_running = True
                return True
            changed = self._changed
            self._waiting += 1
            try:
                await changed.wait()
            finally:
                self._waiting -= 1

    def succeeded(self) -> None:
        self.consecutive_failures = 0
        if self.paused:
            self._close()

    def failed(self, error: BaseException, *, unavailable: bool | None = None) -> Verdict:
        """`unavailable`: the caller's own classification (e.g. dlq-service's DatabaseUnavailable); by default the
        error is classified by `is_unavailable`."""
        if is_permanent(error):
            # Says nothing about the dependencies: a trial that met a malformed message lets the next one try.
            self._trial_running = False
            self._notify()
            return Verdict.counted
        if unavailable is None:
            unavailable = is_unavailable(error)
        if self.state is BreakerState.closed:
            if unavailable:
                self._open(Cause.unavailable, error)
            else:
                self.consecutive_failures += 1
                if self.consecutive_failures >= self.settings.failure_threshold:
                    self._open(Cause.consecutive_failures, error)
        elif self.state is BreakerState.half_open:
            self._reopen(error)
        if not unavailable:
            return Verdict.counted
        self.held_deliveries += 1
        if self.metrics is not None:
            self.metrics.held.add(1, {"queue": self.queue})
        return Verdict.held

    def abandoned(self) -> None:
        """An admitted delivery ended without an outcome (its channel closed): another one may try."""
        self._trial_running = False
        self._notify()

    async def stop(self) -> None:
        """Releases every waiting delivery (admit answers False while paused) and ends the probing."""
        self.stopping = True
        self._notify()
        await self._stop_probing()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _open(self, cause: Cause, error: BaseException) -> None:
        self.state = BreakerState.open
        self.cause = cause
        self.last_error = describe(error)
        self.pauses[cause] += 1
        if self.metrics is not None:
            self.metrics.pauses.add(1, {"queue": self.queue, "cause": cause.value})
        self._paused_at = time.monotonic()
        self._trial_running = False
        log.warn("consumer.paused", {"queue": self.queue, "cause": cause.value, "error": self.last_error})
        self._start_probing()

    def _reopen(self, error: BaseException) -> None:
        self.state = BreakerState.open
        self.last_error = describe(error)
        self.backoff_s = min(self.backoff_s * 2, self.settings.max_backoff_s)
        self._trial_running = False
        log.warn(
            "consumer.trial_failed", {"queue": self.queue, "error": self.last_error, "next_probe_s": self.backoff_s}
        )
        self._start_probing()

    def _close(self) -> None:
        log.info(
            "consumer.resumed", {"queue": self.queue, "cause": self.cause, "paused_s": round(self.paused_for_s, 1)}
        )
        self.state = BreakerState.closed
        self.cause = None
        self._paused_at = None
        self._trial_running = False
        self.consecutive_failures = 0
        self.backoff_s = self.settings.initial_backoff_s
        if self._prober is not None and self._prober is not asyncio.current_task():
            self._prober.cancel()
        self._prober = None
        self._notify()

    def _start_probing(self) -> None:
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(
                self._probe_until_answered(), name=f"probe-{self.queue}"
            )

    async def _stop_probing(self) -> None:
        prober, self._prober = self._prober, None
        if prober is not None and prober is not asyncio.current_task():
            prober.cancel()
            await asyncio.gather(prober, return_exceptions=True)

    def _wait_s(self) -> float:
        spread = self.settings.jitter
        return self.backoff_s * random.uniform(1 - spread, 1 + spread)

    async def _probe_until_answered(self) -> None:
        while self.state is BreakerState.open and not self.stopping:
            await asyncio.sleep(self._wait_s())
            failure = await self._probe()
            if self.state is not BreakerState.open:
                return
            if failure is None:
                if self._waiting == 0:
                    # Nothing is held or waiting: there is no delivery to try, and nothing left to pause.
                    self._close()
                else:
                    self.state = BreakerState.half_open
                    self._trial_running = False
                    self._notify()
                return
            self.last_error = failure
            self.backoff_s = min(self.backoff_s * 2, self.settings.max_backoff_s)

    async def _probe(self) -> str | None:
        """None when every probe answered in time, else what failed."""
        for name, probe in self.probes.items():
            failure = await self._ask(name, probe)
            if failure is not None:
                return failure
        return None

    async def _ask(self, name: str, probe: Check) -> str | None:
        """One probe as a task of its own, waited for at most `probe_timeout_s`. A client on a torn-down
        connection may swallow the cancellation a timeout relies on, or raise CancelledError of its own: in a
        task, neither can hang the probing or end it; a probe that does not answer in time is abandoned."""
        task = asyncio.ensure_future(probe())
        self._asked.add(task)
        task.add_done_callback(_forget(self._asked))
        done, _ = await asyncio.wait({task}, timeout=self.settings.probe_timeout_s)
        if not done:
            task.cancel()
            return f"{name}: no answer within {self.settings.probe_timeout_s:g}s"
        if task.cancelled():
            return f"{name}: cancelled (its connection was torn down)"
        error = task.exception()
        return None if error is None else f"{name}: {describe(error)}"


def _forget(tasks: set[asyncio.Future[Mapping[str, object]]]) -> Callable[[asyncio.Future[Mapping[str, object]]], None]:
    def done(task: asyncio.Future[Mapping[str, object]]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: reported by `_ask`, or of a probe abandoned for not answering in time

    return done


class ConsumptionPaused(Exception):
    """Readiness: a consumer of this process is paused by an outage."""


class Outages:
    """One per service process: a breaker per consumed queue, all probing the same dependencies; the readiness
    check (503 while any is paused; liveness is not affected) and the metrics."""

    def __init__(
        self, probes: Mapping[str, Check], telemetry: Telemetry, settings: BreakerSettings | None = None
    ) -> None:
        self.probes = dict(probes)
        self.settings = settings or BreakerSettings()
        self.breakers: dict[str, Breaker] = {}
        meter = telemetry.meter
        gauge(meter, "fmhl_consumer_paused", "1 while the queue's consumer is paused by an outage.", self._observe)
        self.metrics = BreakerMetrics(
            pauses=counter(meter, "fmhl_consumer_pauses_total", "Pauses of a queue's consumer, by cause."),
            held=counter(meter, "fmhl_consumer_held_total", "Failed deliveries held for an outage, not counted."),
        )

    def breaker(self, queue: str) -> Breaker:
        if queue not in self.breakers:
            self.breakers[queue] = Breaker(queue, self.probes, self.settings, self.metrics)
        return self.breakers[queue]

    def _observe(self) -> Iterable[Observation]:
        return [Observation(int(breaker.paused), {"queue": queue}) for queue, breaker in self.breakers.items()]

    def check(self) -> Check:
        async def check() -> Mapping[str, object]:
            paused = {queue: breaker for queue, breaker in self.breakers.items() if breaker.paused}
            if paused:
                raise ConsumptionPaused("; ".join(
                    f"{queue} paused {breaker.paused_for_s:.0f}s ({breaker.cause}): {breaker.last_error}"
                    for queue, breaker in paused.items()
                ))  # fmt: skip
            return {"consumers": len(self.breakers)}

        return check

    async def stop(self) -> None:
        await asyncio.gather(*(breaker.stop() for breaker in self.breakers.values()))
