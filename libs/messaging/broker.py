"""The FastStream broker of a service: bounded prefetch, confirms, returned messages raise, topology declared,
one RabbitMQ node or a cluster's nodes in turn, dead connections noticed within twice the heartbeat."""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import aiormq
from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue, RabbitRouter
from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from yarl import URL

from libs.health import Check
from libs.messaging.topology import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, Topology
from libs.messaging.wire import install_tolerant_decoding
from libs.settings import node_urls
from libs.telemetry import PeriodicRefresh, Telemetry

EVENTS = RabbitExchange(EVENTS_EXCHANGE, type=ExchangeType.TOPIC, durable=True)
DEAD_LETTERS = RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.FANOUT, durable=True)
# Passive declarations: a service's user may not configure the exchanges, only find them.
EVENTS_LOOKUP = RabbitExchange(EVENTS_EXCHANGE, type=ExchangeType.TOPIC, durable=True, declare=False)
DEAD_LETTERS_LOOKUP = RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.FANOUT, durable=True, declare=False)
_USERS: weakref.WeakKeyDictionary[RabbitBroker, str] = weakref.WeakKeyDictionary()
_NODES: weakref.WeakKeyDictionary[RabbitBroker, NodeRotation] = weakref.WeakKeyDictionary()

HEARTBEAT_S = 10
"""The AMQP heartbeat asked for when RABBITMQ_URL names none (`?heartbeat=` in the URL wins)."""
HEARTBEAT_GRACE = 1.25
"""aiormq gives up on a connection after (heartbeat + 1) s x this of silence, checked every heartbeat / 2 s: at
most about 1.9 heartbeats after the last frame, and two heartbeats the broker sends (every heartbeat / 2) must be
missing first. aiormq's own 3 noticed a black-holed broker only after 3.8 heartbeats."""
CONNECT_TIMEOUT_S = 10.0
"""One connection attempt, the AMQP handshake included: a frozen node accepts TCP and never answers."""
RECONNECT_INTERVAL_S = 2.0
GRACEFUL_TIMEOUT_S = 15.0
"""On stop, how long in-flight handlers get to finish once their consumer is cancelled."""
log = logging.getLogger(__name__)


def connection_url(url: str, service: str) -> str:
    """The URL aiormq gets: the default heartbeat unless the URL names one, and the service's name on the
    connection (aiormq reads it from `?name=` only), for the management UI and `rabbitmqctl list_connections`."""
    part = urlsplit(url)
    query = dict(parse_qsl(part.query))
    query.setdefault("heartbeat", str(HEARTBEAT_S))
    query.setdefault("name", service)
    return urlunsplit(part._replace(query=urlencode(query)))


class NodeRotation(TransportFactory):
    """Opens each connection attempt's socket to the cluster's nodes in turn, starting after the node the last
    attempt used: a reconnect after a node went away (or froze mid-handshake) tries the other nodes first, and
    within one attempt a node that refuses the connection costs nothing but the refusal."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.nodes = [(part.hostname or "", part.port or 0) for part in map(urlsplit, urls)]
        self._next = 0

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        transport = TLSTransportFactory() if url.scheme == "amqps" else TCPTransportFactory()
        refused = []
        for _ in self.nodes:
            host, port = self.nodes[self._next]
            self._next = (self._next + 1) % len(self.nodes)
            node = url.with_host(host).with_port(port or url.port)
            try:
                streams = await transport.create(node, **kwargs)
            except aiormq.exceptions.AMQPConnectionError as error:
                refused.append(f"{host}:{node.port} {error}")
                continue
            log.info("broker connection opened to %s:%s", host, node.port)
            return streams
        raise aiormq.exceptions.AMQPConnectionError(f"no broker node took the connection: {'; '.join(refused)}")


class FailoverConnection(RobustConnection):
    """aio-pika's reconnecting connection with its socket opened by a `NodeRotation` (aiormq's transport factory)."""

    def __init__(self, url: URL, loop: asyncio.AbstractEventLoop | None = None, *, nodes: NodeRotation,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(url, loop, **kwargs)
        self.kwargs["transport_factory"] = nodes


def telemetry_middleware(telemetry: Telemetry) -> RabbitTelemetryMiddleware:
    """FastStream's RabbitMQ telemetry: a span per publish and per delivery, W3C `traceparent` carried across (the
    dlq-service's capture consumes without FastStream and traces its batches itself)."""
    return RabbitTelemetryMiddleware(tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider)


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
    """`rabbitmq_url`: one node's URL, or a cluster's nodes' URLs separated by commas (`node_urls`). The first
    node that takes the connection is used; when it goes away, the broker reconnects to the next ones in turn."""
    urls = node_urls(rabbitmq_url)
    # A property that is not valid UTF-8 must cost one message, not the connection (libs/messaging/wire.py).
    install_tolerant_decoding()
    # Process-wide, as aiormq reads it from its class: every connection of a service is one of ours.
    aiormq.Connection.HEARTBEAT_GRACE_MULTIPLIER = HEARTBEAT_GRACE  # type: ignore[assignment]
    default_channel = Channel(prefetch_count=prefetch, publisher_confirms=True, on_return_raises=True)
    broker = RabbitBroker(
        connection_url(urls[0], service),
        timeout=CONNECT_TIMEOUT_S,
        reconnect_interval=RECONNECT_INTERVAL_S,
        # Prefetch bounds both unacked messages and the handler's concurrency (FastStream ties them).
        default_channel=default_channel,
        app_id=service,
        graceful_timeout=GRACEFUL_TIMEOUT_S,
        # TELEMETRY_ENABLED=false: not even a middleware calling no-op instruments on every message.
        middlewares=[telemetry_middleware(telemetry)] if telemetry.enabled else [],
        routers=list(routers),
        logger=None,
        # No FastDepends: a handler is called with the decoded body alone (`keep_body_raw`: the message itself).
        # With it, every `Context` parameter (the message is one) was resolved in a worker thread, each delivery
        # paying thread hand-offs that cost about a tenth of a distribution-worker's CPU.
        apply_types=False,
    )
    # FastStream hands these to aio-pika's connect_robust and has no parameter for the connection's class.
    nodes = _NODES[broker] = NodeRotation(urls)
    broker._connection_kwargs["connection_class"] = functools.partial(FailoverConnection, nodes=nodes)
    _USERS[broker] = unquote(urlsplit(urls[0]).username or "guest")
    return broker


def robust_connection(broker: RabbitBroker) -> AbstractRobustConnection:
    """The broker's aio-pika connection, for a channel FastStream does not manage: it reconnects by itself, and
    re-opens the robust channels opened on it, with their prefetch and consumers."""
    connection = broker._connection  # FastStream keeps the aio-pika connection private; nothing else exposes it
    if connection is None:
        raise ConnectionError("broker connection is closed")
    return connection


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
    """Ready messages and consumers, as the queue's leader counts them now (a passive declare).

    Each reading opens a channel of its own: a reading cut short by its timeout (a broker under a memory alarm)
    cancels its RPC, aiormq then closes that channel, and on the broker's shared channel the cached queue would
    fail every later reading, leaving the service unready after the broker recovered."""
    async with robust_connection(broker).channel(publisher_confirms=False) as channel:
        queue = await channel.declare_queue(queue_name, passive=True)
        result = queue.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)


async def connect(broker: RabbitBroker) -> None:
    """To the first node that answers, the AMQP handshake included: a node that takes the TCP connection and then
    fails it (frozen, starting, out of resources) sends the next attempt to the next node. Raises when none answers,
    so a service that cannot reach its broker at start exits."""
    attempts = len(_NODES[broker].nodes) if broker in _NODES else 1
    for attempt in range(1, attempts + 1):
        try:
            await broker.connect()
            return
        except (aiormq.exceptions.AMQPError, OSError) as error:
            if attempt == attempts:
                raise
            log.warning("broker connection attempt %d of %d failed: %r", attempt, attempts, error)


def broker_lifecycle(
    broker: RabbitBroker, topology: Topology, queues: Collection[str] | None = None
) -> tuple[Any, Any]:
    """Startup and shutdown hooks: declare the queues before consuming; on stop, drain in-flight handlers."""

    async def start() -> None:
        await connect(broker)
        await declare_topology(broker, topology, queues)
        await broker.start()

    async def stop() -> None:
        await broker.stop()

    return start, stop


_WATCHED_QUEUES: weakref.WeakKeyDictionary[Meter, list[QueueDepthGauge]] = weakref.WeakKeyDictionary()


def _observe_depths(gauges: list[QueueDepthGauge], _: CallbackOptions) -> Iterable[Observation]:
    return [observation for gauge in gauges for observation in gauge.observe()]


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
        # One instrument per meter for every queue a process watches (the dlq-service watches two): the SDK keeps
        # the first observable gauge of a name and silently drops a second one with its callback.
        watched = _WATCHED_QUEUES.get(telemetry.meter)
        if watched is None:
            watched = _WATCHED_QUEUES[telemetry.meter] = []
            telemetry.meter.create_observable_gauge(
                "fmhl_queue_depth",
                callbacks=[functools.partial(_observe_depths, watched)],
                unit="",
                description="Ready messages in the queue.",
            )
        watched.append(self)

    def observe(self) -> list[Observation]:
        return [] if self.depth is None else [Observation(self.depth, {"queue": self.queue_name})]

    async def refresh(self) -> None:
        # An unknown depth is reported as absent, never as a stale number.
        self.depth = None
        self.depth = await asyncio.wait_for(queue_depth(self.broker, self.queue_name), self.interval_s)

    async def start(self) -> None:
        await self._refresh.start()

    async def stop(self) -> None:
        await self._refresh.stop()
