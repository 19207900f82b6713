"""The consumer policy on the real RabbitMQ: retry with backoff, dead-letter with context, survive crashes, and
pause for an outage instead of spending attempts on it."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
import asyncpg.exceptions
import orjson
import pytest
import sqlalchemy.exc
from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker, RabbitRouter
from pamqp import commands

from libs.messaging import headers as h
from libs.messaging.broker import EVENTS, create_broker, declare_topology
from libs.messaging.consumer import ConsumerPolicy, Delivery, pause_on_outages, subscribe
from libs.messaging.errors import BusinessRuleViolation, TransientError
from libs.messaging.outage import BreakerSettings, ConsumptionPaused, Outages
from libs.messaging.publisher import Publisher
from libs.messaging.topology import DEAD_LETTER_EXCHANGE, Topology, WorkQueue
from libs.telemetry import Telemetry, setup_telemetry
from tests.libs.messaging.ping import Ping, ping_queue

Behaviour = Callable[[int], Awaitable[None]]

FAST_BREAKER = BreakerSettings(failure_threshold=5, initial_backoff_s=0.05, max_backoff_s=0.2, jitter=0)


class Dependency:
    """What the breaker probes, as the runtime's database and broker checks: up or refusing connections."""

    def __init__(self) -> None:
        self.up = True
        self.asked = 0

    async def __call__(self) -> dict[str, object]:
        self.asked += 1
        if not self.up:
            raise ConnectionRefusedError(111, "Connect call failed")
        return {}

    async def use(self) -> None:
        """What a handler does with it: fails as a refused connection while it is down."""
        await self()


@dataclass
class Harness:
    url: str
    queue: WorkQueue
    publisher: Publisher
    telemetry: Telemetry
    dead_letters: asyncio.Queue[AbstractIncomingMessage]
    dependency: Dependency = field(default_factory=Dependency)
    outages: Outages | None = None
    behaviours: dict[int, Behaviour] = field(default_factory=dict)
    calls: list[tuple[int, float, int]] = field(default_factory=list)

    async def send(self, body: bytes, *, message_type: str = "test.ping", message_id: str | None = None) -> str:
        message_id = message_id or str(uuid.uuid4())
        await self.publisher.publish_raw(
            body,
            exchange=EVENTS,
            routing_key=self.queue.routing_keys[0],
            message_id=message_id,
            correlation_id=f"cid-{message_id}",
            message_type=message_type,
            headers={},
        )
        return message_id

    async def send_ping(self, n: int) -> str:
        return await self.send(Ping(n=n).model_dump_json().encode())

    async def send_as_anyone(self, n: int, **properties: Any) -> str:
        """A ping from a plain aio-pika client, as any holder of publish rights could send it."""
        correlation_id = f"cid-{uuid.uuid4()}"
        connection = await aio_pika.connect(self.url)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS.name)
        message = aio_pika.Message(Ping(n=n).model_dump_json().encode(), type="test.ping",
                                   correlation_id=correlation_id, delivery_mode=2, **properties)  # fmt: skip
        await exchange.publish(message, routing_key=self.queue.routing_keys[0])
        await connection.close()
        return correlation_id

    async def dead_letter(self, message_id: str, timeout: float = 10.0) -> AbstractIncomingMessage:
        return await self.dead_letter_where(lambda message: message.message_id == message_id, timeout)

    async def dead_letter_where(
        self, matches: Callable[[AbstractIncomingMessage], bool], timeout: float = 10.0
    ) -> AbstractIncomingMessage:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.dead_letters.get()
                if matches(message):
                    return message

    def attempts_of(self, n: int) -> list[tuple[float, int]]:
        return [(at, attempt) for number, at, attempt in self.calls if number == n]

    def metric(self, line_start: str) -> float:
        for line in self.telemetry.exposition().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


async def _observe_dead_letters(
    url: str, prefix: str
) -> tuple[aio_pika.abc.AbstractConnection, asyncio.Queue[AbstractIncomingMessage]]:
    """An exclusive queue on the dead-letter fanout sees every dead letter this test causes."""
    found: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    connection = await aio_pika.connect_robust(url)
    channel = await connection.channel()
    exchange = await channel.get_exchange(DEAD_LETTER_EXCHANGE)
    observer = await channel.declare_queue(exclusive=True, auto_delete=True)
    await observer.bind(exchange)

    async def keep(message: AbstractIncomingMessage) -> None:
        await message.ack()
        if (message.headers or {}).get(h.ORIGINAL_QUEUE) == prefix or (message.headers or {}).get(
            "x-first-death-queue"
        ) == prefix:
            await found.put(message)

    await observer.consume(keep)
    return connection, found


async def _delete_queues(url: str, queue: WorkQueue) -> None:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    for name in [queue.name, *(queue.delay_queue(a) for a in range(1, queue.max_attempts))]:
        await channel.queue_delete(name)
    await connection.close()


@pytest.fixture
async def harness(rabbitmq_url: str) -> AsyncIterator[Harness]:
    queue = ping_queue()
    telemetry = setup_telemetry("test-worker")
    broker: RabbitBroker = create_broker(rabbitmq_url, telemetry, service="test-worker", prefetch=5)
    publisher = Publisher(broker, Topology((queue,)), telemetry, timeout_s=5.0)
    await broker.connect()
    await declare_topology(broker, Topology((queue,)))
    observer, dead_letters = await _observe_dead_letters(rabbitmq_url, queue.name)
    state = Harness(rabbitmq_url, queue, publisher, telemetry, dead_letters)
    # As a ServiceRuntime wires it: the policies take their breaker from the process's outages.
    state.outages = Outages({"dependency": state.dependency}, telemetry, FAST_BREAKER)
    pause_on_outages(broker, state.outages)
    loop = asyncio.get_running_loop()

    async def on_ping(ping: Ping, delivery: Delivery) -> None:
        state.calls.append((ping.n, loop.time(), delivery.attempt))
        if behaviour := state.behaviours.get(ping.n):
            await behaviour(delivery.attempt)

    router = RabbitRouter()
    subscribe(
        router,
        ConsumerPolicy(queue, {Ping: on_ping}, publisher, telemetry, service="test-worker", handler_timeout_s=1.0),
    )
    broker.include_router(router)
    await broker.start()
    yield state
    await state.outages.stop()
    await broker.stop()
    await observer.close()
    await _delete_queues(rabbitmq_url, queue)


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_transient_error_is_retried_with_growing_delays_then_succeeds(harness: Harness) -> None:
    async def fail_twice(attempt: int) -> None:
        if attempt <= 2:
            raise TransientError("database unavailable")

    harness.behaviours[1] = fail_twice
    message_id = await harness.send_ping(1)
    await eventually(lambda: len(harness.attempts_of(1)) == 3)

    (first, _), (second, _), (third, attempt) = harness.attempts_of(1)
    assert attempt == 3
    assert second - first >= 0.2
    assert third - second >= 0.6
    assert third - second > second - first
    with pytest.raises(TimeoutError):
        await harness.dead_letter(message_id, timeout=1.0)
    assert harness.metric('fmhl_jobs_failed_total{outcome="retried",queue=') == 2
    await eventually(lambda: harness.metric("fmhl_jobs_completed_total{queue=") == 1)


async def test_permanent_error_reaches_the_dlq_at_once_with_its_context(harness: Harness) -> None:
    async def refuse(_: int) -> None:
        raise BusinessRuleViolation("provider account is closed")

    harness.behaviours[2] = refuse
    message_id = await harness.send_ping(2)
    dead = await harness.dead_letter(message_id)

    headers = dead.headers or {}
    assert len(harness.attempts_of(2)) == 1
    assert headers[h.REASON] == "error"
    assert headers[h.ERROR_TYPE] == "BusinessRuleViolation"
    assert headers[h.ERROR_CLASS] == "permanent"
    assert headers[h.ERROR_MESSAGE] == "provider account is closed"
    assert "Traceback" in str(headers[h.ERROR_STACK])
    assert headers[h.ATTEMPTS] == 1
    assert headers[h.SERVICE] == "test-worker"
    assert headers[h.ORIGINAL_QUEUE] == harness.queue.name
    assert headers[h.ORIGINAL_EXCHANGE] == EVENTS.name
    assert headers[h.ORIGINAL_ROUTING_KEY] == harness.queue.routing_keys[0]
    assert headers[h.FIRST_FAILURE_AT] == headers[h.LAST_FAILURE_AT]
    assert dead.correlation_id == f"cid-{message_id}"
    assert orjson.loads(dead.body) == {"n": 2}
    await eventually(lambda: harness.metric('fmhl_jobs_failed_total{outcome="dead_lettered",queue=') == 1)


@pytest.mark.parametrize(
    ("body", "message_type", "error_type", "detail"),
    [
        (b"{not json", "test.ping", "UndecodableBody", "not valid JSON"),
        (b'{"n": "seven"}', "test.ping", "SchemaMismatch", "n:"),
        (b'{"n": 1, "extra": true}', "test.ping", "SchemaMismatch", "extra"),
        (b"[" * 100_000, "test.ping", "UndecodableBody", "not valid JSON"),
        (b'{"n": 1}', "test.unknown", "UnknownMessageType", "test.unknown"),
    ],
    ids=["malformed", "wrong-type", "unknown-field", "deep-nesting", "unknown-type"],
)
async def test_bad_message_reaches_the_dlq_and_the_queue_keeps_flowing(
    harness: Harness, body: bytes, message_type: str, error_type: str, detail: str
) -> None:
    message_id = await harness.send(body, message_type=message_type)
    await harness.send_ping(3)

    headers = (await harness.dead_letter(message_id)).headers or {}
    assert headers[h.ERROR_TYPE] == error_type
    assert detail in str(headers[h.ERROR_MESSAGE])
    assert headers[h.ATTEMPTS] == 1
    await eventually(lambda: len(harness.attempts_of(3)) == 1)


async def test_transient_error_that_never_clears_is_dead_lettered_after_the_last_attempt(
    harness: Harness,
) -> None:
    async def always_busy(_: int) -> None:
        raise TransientError("451 mailbox busy, try again later")

    harness.behaviours[4] = always_busy
    message_id = await harness.send_ping(4)
    headers = (await harness.dead_letter(message_id, timeout=15)).headers or {}

    assert [attempt for _, attempt in harness.attempts_of(4)] == [1, 2, 3, 4]
    assert headers[h.ATTEMPTS] == harness.queue.max_attempts
    assert headers[h.ERROR_CLASS] == "transient"
    assert headers[h.ERROR_TYPE] == "TransientError"
    assert str(headers[h.FIRST_FAILURE_AT]) < str(headers[h.LAST_FAILURE_AT])
    assert not any(key.startswith("x-") and key != "x-death" for key in headers if key != "x-first-death-queue")


async def test_a_handler_over_its_timeout_is_retried_as_transient(harness: Harness) -> None:
    async def slow_once(attempt: int) -> None:
        if attempt == 1:
            await asyncio.sleep(5)

    harness.behaviours[5] = slow_once
    await harness.send_ping(5)
    await eventually(lambda: len(harness.attempts_of(5)) == 2)
    await eventually(lambda: harness.metric("fmhl_jobs_completed_total{queue=") == 1)
    assert harness.metric('fmhl_jobs_failed_total{outcome="retried",queue=') == 1


async def test_a_message_that_kills_its_consumer_is_dead_lettered_by_the_broker(rabbitmq_url: str) -> None:
    queue = ping_queue(delivery_limit=2)
    spec = orjson.dumps(dataclasses.asdict(queue)).decode()
    telemetry = setup_telemetry("test-publisher")
    broker = create_broker(rabbitmq_url, telemetry, service="test-publisher")
    await broker.connect()
    await declare_topology(broker, Topology((queue,)))
    observer, dead_letters = await _observe_dead_letters(rabbitmq_url, queue.name)
    publisher = Publisher(broker, Topology((queue,)), telemetry, timeout_s=5.0)
    state = Harness(rabbitmq_url, queue, publisher, telemetry, dead_letters)
    poison = await state.send_ping(-1)
    await state.send_ping(1)

    crashes = 0
    handled_good_message = False
    try:
        for _ in range(queue.delivery_limit + 3):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.libs.messaging.crashing_consumer",
                rabbitmq_url,
                spec,
                stdout=asyncio.subprocess.PIPE,
            )
            assert process.stdout is not None
            async with asyncio.timeout(60):
                while line := await process.stdout.readline():
                    if line.strip() == b"handled 1":
                        handled_good_message = True
                        break
            if handled_good_message:
                process.terminate()
                await process.wait()
                break
            assert await process.wait() == 3
            crashes += 1
        dead = await state.dead_letter(poison, timeout=10)
    finally:
        await observer.close()
        await broker.stop()
        await _delete_queues(rabbitmq_url, queue)

    assert crashes == queue.delivery_limit + 1
    assert handled_good_message
    assert (dead.headers or {})["x-first-death-reason"] == "delivery_limit"
    assert (dead.headers or {})["x-first-death-queue"] == queue.name


FORGED_FAILURE = {
    h.ATTEMPT: 3, h.ATTEMPTS: 99, h.REASON: "delivery_limit", h.SERVICE: "someone-else",
    h.ORIGINAL_EXCHANGE: "amq.fanout", h.ORIGINAL_QUEUE: "elsewhere", h.ORIGINAL_ROUTING_KEY: "admin.everything",
    h.FIRST_FAILURE_AT: "2000-01-01T00:00:00+00:00", h.LAST_FAILURE_AT: "2000-01-01T00:00:00+00:00",
    h.ERROR_TYPE: "Forged", h.ERROR_CLASS: "permanent", h.ERROR_MESSAGE: "forged", h.ERROR_STACK: "forged",
    "fmhl-error-anything": "forged",
}  # fmt: skip


async def test_failure_headers_set_by_a_publisher_are_overwritten_in_the_dead_letter(harness: Harness) -> None:
    async def refuse(_: int) -> None:
        raise BusinessRuleViolation("refused")

    harness.behaviours[6] = refuse
    message_id = str(uuid.uuid4())
    await harness.send_as_anyone(6, message_id=message_id, headers=FORGED_FAILURE)
    headers = (await harness.dead_letter(message_id)).headers or {}

    assert harness.attempts_of(6)[0][1] == 1
    assert (headers[h.ATTEMPT], headers[h.ATTEMPTS], headers[h.REASON]) == (1, 1, "error")
    assert (headers[h.ERROR_TYPE], headers[h.ERROR_MESSAGE]) == ("BusinessRuleViolation", "refused")
    assert headers[h.ORIGINAL_EXCHANGE] == EVENTS.name
    assert headers[h.ORIGINAL_QUEUE] == harness.queue.name
    assert headers[h.ORIGINAL_ROUTING_KEY] == harness.queue.routing_keys[0]
    assert headers[h.SERVICE] == "test-worker"
    assert headers[h.FIRST_FAILURE_AT] == headers[h.LAST_FAILURE_AT] != "2000-01-01T00:00:00+00:00"
    assert "fmhl-error-anything" not in headers


async def test_a_forged_attempt_count_does_not_spend_the_retry_budget(harness: Harness) -> None:
    async def always_busy(_: int) -> None:
        raise TransientError("451 mailbox busy, try again later")

    harness.behaviours[7] = always_busy
    message_id = str(uuid.uuid4())
    # As if it came back from our last delay queue: the x-death a publisher may write like any other header.
    death = {"queue": harness.queue.delay_queue(harness.queue.max_attempts - 1), "reason": "expired", "count": 1}
    await harness.send_as_anyone(7, message_id=message_id, headers=FORGED_FAILURE | {"x-death": [death]})
    headers = (await harness.dead_letter(message_id, timeout=15)).headers or {}

    assert [attempt for _, attempt in harness.attempts_of(7)] == [1, 2, 3, 4]
    assert headers[h.ATTEMPTS] == harness.queue.max_attempts
    assert headers[h.FIRST_FAILURE_AT] != "2000-01-01T00:00:00+00:00"


class WithoutMessageId(commands.Basic.Properties):
    """aiormq gives every message it publishes a random id; other clients (and attackers) need not."""

    def marshal(self) -> bytes:
        kept = {name: getattr(self, name) for name in self.__slots__ if name != "message_id"}
        return commands.Basic.Properties(**kept).marshal()


async def test_a_message_without_a_message_id_is_dead_lettered_saying_so(harness: Harness) -> None:
    correlation_id = f"cid-{uuid.uuid4()}"
    connection = await aiormq.connect(harness.url)
    channel = await connection.channel()
    await channel.basic_publish(
        Ping(n=8).model_dump_json().encode(), exchange=EVENTS.name, routing_key=harness.queue.routing_keys[0],
        properties=WithoutMessageId(message_id="dropped", message_type="test.ping", correlation_id=correlation_id),
    )  # fmt: skip
    await connection.close()
    dead = await harness.dead_letter_where(lambda message: message.correlation_id == correlation_id)

    headers = dead.headers or {}
    assert harness.attempts_of(8) == []
    assert headers[h.ERROR_TYPE] == "MissingMessageId"
    assert "no message_id" in str(headers[h.ERROR_MESSAGE])
    assert headers[h.ERROR_CLASS] == "permanent"


async def test_a_number_too_long_to_convert_fails_once_as_permanent(harness: Harness) -> None:
    async def convert(_: int) -> None:
        int("9" * 5_000)

    harness.behaviours[9] = convert
    message_id = await harness.send_ping(9)
    headers = (await harness.dead_letter(message_id)).headers or {}

    assert len(harness.attempts_of(9)) == 1
    assert (headers[h.ERROR_TYPE], headers[h.ERROR_CLASS], headers[h.ATTEMPTS]) == ("ValueError", "permanent", 1)


async def test_a_reply_to_gets_no_answer(harness: Harness) -> None:
    connection = await aio_pika.connect(harness.url)
    channel = await connection.channel()
    stranger = await channel.declare_queue(f"stranger-{uuid.uuid4().hex[:8]}", exclusive=True)
    await harness.send_as_anyone(10, message_id=str(uuid.uuid4()), reply_to=stranger.name)
    await eventually(lambda: len(harness.attempts_of(10)) == 1)
    await eventually(lambda: harness.metric("fmhl_jobs_completed_total{queue=") == 1)

    async def nothing_arrived() -> bool:
        return (await stranger.declare()).message_count == 0

    deadline = asyncio.get_running_loop().time() + 1.5
    while asyncio.get_running_loop().time() < deadline:
        assert await nothing_arrived()
        await asyncio.sleep(0.1)
    await connection.close()


async def test_headers_too_large_to_carry_are_dropped_not_the_connection(harness: Harness) -> None:
    async def refuse(_: int) -> None:
        raise BusinessRuleViolation("refused")

    harness.behaviours[11] = refuse
    message_id = str(uuid.uuid4())
    # Under the frame as sent; with the error headers added it would not be, and RabbitMQ would close the
    # connection that every consumer of this process shares.
    await harness.send_as_anyone(11, message_id=message_id, headers={"padding": "x" * 120_000})
    headers = (await harness.dead_letter(message_id)).headers or {}
    await harness.send_ping(12)

    assert "padding" not in headers
    assert "too large to carry" in str(headers[h.HEADERS_DROPPED])
    assert headers[h.ERROR_TYPE] == "BusinessRuleViolation"
    await eventually(lambda: len(harness.attempts_of(12)) == 1)
    assert len(harness.attempts_of(11)) == 1


# ---- outages: paused, not counted ---------------------------------------------------------------


def deadlock() -> sqlalchemy.exc.DBAPIError:
    return sqlalchemy.exc.DBAPIError("UPDATE providers", {}, asyncpg.exceptions.DeadlockDetectedError("deadlock"))


async def readiness_fails(outages: Outages) -> bool:
    try:
        await outages.check()()
    except ConsumptionPaused:
        return True
    return False


async def test_a_dependency_outage_holds_the_delivery_uncounted_until_the_dependency_answers(harness: Harness) -> None:
    async def needs_the_dependency(_: int) -> None:
        await harness.dependency.use()

    assert harness.outages is not None
    harness.behaviours[20] = needs_the_dependency
    harness.dependency.up = False
    message_id = await harness.send_ping(20)
    await eventually(lambda: harness.metric("fmhl_consumer_paused{queue=") == 1)
    assert await readiness_fails(harness.outages)
    probes_then = harness.dependency.asked
    await eventually(lambda: harness.dependency.asked >= probes_then + 3)
    assert len(harness.attempts_of(20)) == 1  # the probes try the dependency, not the delivery
    harness.dependency.up = True
    await eventually(lambda: harness.metric("fmhl_jobs_completed_total{queue=") == 1)

    assert [attempt for _, attempt in harness.attempts_of(20)] == [1, 1]
    assert harness.metric('fmhl_jobs_failed_total{outcome="retried",queue=') == 0
    assert harness.metric("fmhl_consumer_held_total{queue=") == 1
    assert not await readiness_fails(harness.outages)
    with pytest.raises(TimeoutError):
        await harness.dead_letter(message_id, timeout=0.5)


async def test_while_paused_no_new_delivery_is_taken(harness: Harness) -> None:
    async def needs_the_dependency(_: int) -> None:
        await harness.dependency.use()

    prefetch, sent = 5, range(30, 38)
    for n in sent:
        harness.behaviours[n] = needs_the_dependency
    harness.dependency.up = False
    for n in sent:
        await harness.send_ping(n)
    await eventually(lambda: harness.metric("fmhl_consumer_paused{queue=") == 1)
    probes_then = harness.dependency.asked
    await eventually(lambda: harness.dependency.asked >= probes_then + 3)
    # The prefetched deliveries wait (held or not yet tried); the rest stay in the queue.
    assert {number for number, _, _ in harness.calls} <= set(sent[:prefetch])
    harness.dependency.up = True
    await eventually(lambda: harness.metric("fmhl_jobs_completed_total{queue=") == len(sent))
    assert {number for number, _, _ in harness.calls} == set(sent)
    assert {attempt for _, _, attempt in harness.calls} == {1}
    assert harness.metric('fmhl_jobs_failed_total{outcome="retried",queue=') == 0


async def test_one_deadlock_keeps_the_retry_with_backoff(harness: Harness) -> None:
    async def deadlocked_once(attempt: int) -> None:
        if attempt == 1:
            raise deadlock()

    harness.behaviours[40] = deadlocked_once
    await harness.send_ping(40)
    await eventually(lambda: harness.metric("fmhl_jobs_completed_total{queue=") == 1)
    assert [attempt for _, attempt in harness.attempts_of(40)] == [1, 2]
    assert harness.metric('fmhl_jobs_failed_total{outcome="retried",queue=') == 1
    assert harness.metric("fmhl_consumer_paused{queue=") == 0


async def test_a_stop_while_paused_returns_the_held_delivery_to_its_queue_unhandled(harness: Harness) -> None:
    async def needs_the_dependency(_: int) -> None:
        await harness.dependency.use()

    harness.behaviours[50] = needs_the_dependency
    harness.dependency.up = False
    await harness.send_ping(50)
    await eventually(lambda: harness.metric("fmhl_consumer_paused{queue=") == 1)
    assert harness.outages is not None
    # As a service stops: the held deliveries are released first, then the consumer ends.
    await harness.outages.stop()
    await harness.publisher.broker.stop()

    async def back_in_the_queue() -> bool:
        connection = await aio_pika.connect(harness.url)
        channel = await connection.channel()
        queue = await channel.declare_queue(harness.queue.name, passive=True)
        ready = queue.declaration_result.message_count
        await connection.close()
        return ready == 1

    async with asyncio.timeout(10):
        while not await back_in_the_queue():
            await asyncio.sleep(0.05)
    assert [attempt for _, attempt in harness.attempts_of(50)] == [1]
