"""The FastStream broker of a service: bounded prefetch, confirms, returned messages raise, topology declared."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Collection, Iterable, Mapping
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue, RabbitRouter
from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware
from faststream.rabbit.utils import RabbitClientProperties
from opentelemetry.metrics import CallbackOptions, Observation

from libs.health import Check
from libs.messaging.topology import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, Topology
from libs.messaging.wire import install_tolerant_decoding
from libs.telemetry import PeriodicRefresh, Telemetry

EVENTS = RabbitExchange(EVENTS_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
DEAD_LETTERS = RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.FANOUT, durable=True)
# Passive declarations: a service's user may not configure the exchanges, only find them.
EVENTS_LOOKUP = RabbitExchange(EVENTS_EXCHANGE, type=ExchangeType.TOPIC, durable=True, declare=False)
DEAD_LETTERS_LOOKUP = RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.FANOUT, durable=True, declare=False)
_USERS: weakref.WeakKeyDictionary[RabbitBroker, str] = weakref.WeakKeyDictionary()


def connection_user(broker: RabbitBroker) -> str | None:
    """The broker user a `create_broker` broker logs in as: RabbitMQ refuses a publish whose `user_id` property
    names anyone else, which makes `user_id` the one property a consumer can believe."""
    return _USERS.get(broker)


def create_broker(
    rabbitmq_url: str,
    telemetry: Telemetry,
    *,
    service: str,
    prefetch: int = 10,
    routers: Iterable[RabbitRouter] = (),
) -> RabbitBroker:
    # A property that is not valid UTF-8 must cost one message, not the connection (libs/messaging/wire.py).
    install_tolerant_decoding()
    broker = RabbitBroker(
        rabbitmq_url,
        # Prefetch bounds both unacked messages and the handler's concurrency (FastStream ties them).
        default_channel=Channel(prefetch_count=prefetch, publisher_confirms=True, on_return_raises=True),
        app_id=service,
        # Names the connection in the management UI; aio-pika passes unknown keys on to the broker.
        client_properties=cast("RabbitClientProperties", {"connection_name": service}),
        graceful_timeout=15.0,
        middlewares=[
            RabbitTelemetryMiddleware(
                tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
            )
        ],
        routers=list(routers),
        logger=None,
    )
    _USERS[broker] = unquote(urlsplit(rabbitmq_url).username or "guest")
    return broker


async def declare_topology(broker: RabbitBroker, topology: Topology, queues: Collection[str] | None = None) -> None:
    """Idempotent. Everything (`queues=None`) is declared by the provisioning step, as the broker's administrator.
    A service passes the queues its own user may configure (libs.messaging.permissions) and declares only those,
    with their bindings and delay queues; the exchanges it binds to are then looked up, never declared."""
    everything = queues is None

    def wanted(name: str) -> bool:
        return queues is None or name in queues

    events = await broker.declare_exchange(EVENTS if everything else EVENTS_LOOKUP)
    if wanted(topology.dlq_queue):
        dead_letters = await broker.declare_exchange(DEAD_LETTERS if everything else DEAD_LETTERS_LOOKUP)
        dlq = await broker.declare_queue(
            RabbitQueue(topology.dlq_queue, durable=True, arguments=topology.dlq_arguments)  # type: ignore[call-overload]
        )
        await dlq.bind(dead_letters, routing_key="")
    if wanted(topology.parking_queue):
        await broker.declare_queue(
            RabbitQueue(topology.parking_queue, durable=True, arguments=topology.dlq_arguments)  # type: ignore[call-overload]
        )
    for work_queue in topology.work_queues:
        if not wanted(work_queue.name):
            continue
        queue = await broker.declare_queue(
            RabbitQueue(work_queue.name, durable=True, arguments=work_queue.arguments())  # type: ignore[call-overload]
        )
        for routing_key in work_queue.routing_keys:
            await queue.bind(events, routing_key=routing_key)
        for attempt in range(1, work_queue.max_attempts):
            await broker.declare_queue(
                RabbitQueue(  # type: ignore[call-overload]
                    work_queue.delay_queue(attempt),
                    durable=True,
                    arguments=work_queue.delay_arguments(attempt),
                )
            )


def broker_check(broker: RabbitBroker) -> Check:
    async def check() -> Mapping[str, Any]:
        if not await broker.ping(timeout=1.5):
            raise ConnectionError("broker connection is closed")
        return {}

    return check


def queue_check(broker: RabbitBroker, queue_name: str) -> Check:
    """Passive declare: proves the channel works and reports the ready-message depth."""

    async def check() -> Mapping[str, Any]:
        return {"depth": await queue_depth(broker, queue_name)}

    return check


async def queue_depth(broker: RabbitBroker, queue_name: str) -> int:
    ready, _ = await queue_counts(broker, queue_name)
    return ready


async def queue_counts(broker: RabbitBroker, queue_name: str) -> tuple[int, int]:
    """Ready messages and consumers, as the queue's leader counts them now (a passive declare)."""
    queue = await broker.declare_queue(RabbitQueue(queue_name, declare=False))
    result = await queue.declare()
    return int(result.message_count or 0), int(result.consumer_count or 0)


def broker_lifecycle(
    broker: RabbitBroker, topology: Topology, queues: Collection[str] | None = None
) -> tuple[Any, Any]:
    """Startup and shutdown hooks: declare the queues before consuming; on stop, drain in-flight handlers."""

    async def start() -> None:
        await broker.connect()
        await declare_topology(broker, topology, queues)
        await broker.start()

    async def stop() -> None:
        await broker.stop()

    return start, stop


class QueueDepthGauge:
    """`fmhl_queue_depth{queue}`: ready messages in the consumer's own queue, polled in the background.

    Every replica reports the same queue, so alerts aggregate with `max by (queue)`.
    """

    def __init__(self, broker: RabbitBroker, queue_name: str, telemetry: Telemetry, interval_s: float = 10.0) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.interval_s = interval_s
        self.depth: int | None = None
        self._refresh = PeriodicRefresh(self.refresh, interval_s, f"queue-depth-{queue_name}")
        telemetry.meter.create_observable_gauge(
            "fmhl_queue_depth", callbacks=[self._observe], unit="", description="Ready messages in the queue."
        )

    def _observe(self, _: CallbackOptions) -> Iterable[Observation]:
        return [] if self.depth is None else [Observation(self.depth, {"queue": self.queue_name})]

    async def refresh(self) -> None:
        # An unknown depth is reported as absent, never as a stale number.
        self.depth = None
        self.depth = await asyncio.wait_for(queue_depth(self.broker, self.queue_name), self.interval_s)

    async def start(self) -> None:
        await self._refresh.start()

    async def stop(self) -> None:
        await self._refresh.stop()
