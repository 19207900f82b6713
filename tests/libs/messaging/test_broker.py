"""A service's broker: one node or a cluster's nodes in turn, dead connections noticed within twice the heartbeat,
and no telemetry middleware when telemetry is off."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import aiormq
import pytest
from faststream.rabbit import RabbitBroker, RabbitQueue
from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware

from libs.messaging.broker import HEARTBEAT_S, connect, connection_url, create_broker, queue_depth
from libs.settings import node_urls
from libs.telemetry import setup_telemetry
from tests.faults.proxy import FaultProxy, Mode

NODE_A = "amqp://fmhl:secret-1@rabbit-a:5672/fmhl"
NODE_B = "amqp://fmhl:secret-1@rabbit-b:5673/fmhl"


def test_one_url_names_one_node() -> None:
    assert node_urls(NODE_A) == (NODE_A,)


def test_comma_separated_urls_name_the_nodes_of_a_cluster_in_order() -> None:
    assert node_urls(f"{NODE_A}, {NODE_B}") == (NODE_A, NODE_B)


def test_nodes_that_differ_in_more_than_host_and_port_are_refused_without_showing_the_password() -> None:
    with pytest.raises(ValueError, match="differ in more than host and port") as refused:
        node_urls(f"{NODE_A},{NODE_B.replace('secret-1', 'secret-2')}")
    assert "secret" not in str(refused.value)


def test_an_address_that_is_not_an_amqp_url_is_refused_by_its_position() -> None:
    with pytest.raises(ValueError, match="address 2 is not an amqp"):
        node_urls(f"{NODE_A},rabbit-b:5673")


def test_a_connection_is_named_after_its_service_and_asks_for_the_default_heartbeat() -> None:
    query = parse_qs(urlsplit(connection_url(NODE_A, "email-worker")).query)
    assert query == {"heartbeat": [str(HEARTBEAT_S)], "name": ["email-worker"]}


def test_a_heartbeat_in_the_url_wins_over_the_default() -> None:
    assert parse_qs(urlsplit(connection_url(f"{NODE_A}?heartbeat=5", "email-worker")).query)["heartbeat"] == ["5"]


def test_telemetry_off_installs_no_telemetry_middleware() -> None:
    broker = create_broker(NODE_A, setup_telemetry("test", metrics=False, traces=False), service="test")
    assert not [m for m in broker.middlewares if isinstance(m, RabbitTelemetryMiddleware)]


def test_telemetry_on_installs_the_telemetry_middleware() -> None:
    broker = create_broker(NODE_A, setup_telemetry("test"), service="test")
    assert [m for m in broker.middlewares if isinstance(m, RabbitTelemetryMiddleware)]


@dataclass
class Node:
    """One address of the broker: a fault proxy in front of the test RabbitMQ, which can go away or go silent."""

    proxy: FaultProxy
    server: asyncio.Server
    url: str

    def go_away(self) -> None:
        """As a killed node: the connections reset, new ones refused."""
        self.server.close()
        self.proxy.set_mode(Mode.cut)


@asynccontextmanager
async def node(rabbitmq_url: str, heartbeat_s: int = 5) -> AsyncIterator[Node]:
    upstream = urlsplit(rabbitmq_url)
    proxy = FaultProxy(upstream.hostname or "127.0.0.1", upstream.port or 5672)
    server = await asyncio.start_server(proxy.accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = upstream._replace(netloc=f"{upstream.netloc.rsplit('@', 1)[0]}@127.0.0.1:{port}", query="").geturl()
    try:
        yield Node(proxy, server, f"{url}?heartbeat={heartbeat_s}")
    finally:
        proxy.set_mode(Mode.cut)
        server.close()


async def until(condition: Callable[[], Awaitable[bool]], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.05)


async def connected_through(broker: RabbitBroker, node: Node) -> bool:
    return await broker.ping(timeout=0.1) and bool(node.proxy.links)


async def test_the_first_node_that_takes_the_connection_is_used(rabbitmq_url: str) -> None:
    async with node(rabbitmq_url) as gone, node(rabbitmq_url) as b:
        gone.go_away()
        broker = create_broker(f"{gone.url},{b.url}", setup_telemetry("test"), service="test-failover")
        try:
            await broker.connect()
            assert await connected_through(broker, b)
        finally:
            await broker.stop()


async def test_a_node_that_takes_the_connection_but_never_answers_is_passed_over_at_start(rabbitmq_url: str) -> None:
    async with node(rabbitmq_url) as frozen, node(rabbitmq_url) as b:
        frozen.proxy.set_mode(Mode.blackhole)
        broker = create_broker(f"{frozen.url},{b.url}", setup_telemetry("test"), service="test-failover")
        try:
            await connect(broker)
            assert await connected_through(broker, b)
        finally:
            await broker.stop()


async def test_a_broker_whose_node_goes_away_reconnects_to_the_next_node(rabbitmq_url: str) -> None:
    async with node(rabbitmq_url) as a, node(rabbitmq_url) as b:
        broker = create_broker(f"{a.url},{b.url}", setup_telemetry("test"), service="test-failover")
        try:
            await broker.connect()
            assert await connected_through(broker, a)
            a.go_away()
            await until(lambda: connected_through(broker, b), timeout=15)
        finally:
            await broker.stop()


async def test_a_silent_connection_is_given_up_within_twice_the_heartbeat(rabbitmq_url: str) -> None:
    heartbeat_s = 5
    async with node(rabbitmq_url, heartbeat_s) as silent:
        broker = create_broker(silent.url, setup_telemetry("test"), service="test-heartbeat")
        try:
            await broker.connect()
            silent.proxy.set_mode(Mode.blackhole)
            # The promise, not a speed figure: later than this, the connection counts as alive while it is dead.
            await until(lambda: _disconnected(broker), timeout=2 * heartbeat_s)
        finally:
            silent.proxy.set_mode(Mode.cut)
            await broker.stop()


async def _disconnected(broker: RabbitBroker) -> bool:
    return not await broker.ping(timeout=0.1)


async def test_a_queue_reading_cut_short_or_refused_leaves_later_readings_working(rabbitmq_url: str) -> None:
    broker = create_broker(rabbitmq_url, setup_telemetry("test"), service="test-readings")
    name = f"test-readings-{uuid.uuid4().hex[:8]}"
    try:
        await broker.connect()
        await broker.declare_queue(RabbitQueue(name, auto_delete=True))
        await broker.publish(b"one", queue=name)
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            await queue_depth(broker, f"{name}-missing")  # the broker closes the channel that asked
        for _ in range(20):  # readings cancelled mid-RPC (a timeout under a memory alarm) close theirs
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue_depth(broker, name), 0.0005)
        assert await until_value(lambda: queue_depth(broker, name), 1)
        assert await broker.ping(timeout=1)
    finally:
        await broker.stop()


async def until_value(read: Callable[[], Awaitable[int]], expected: int, timeout: float = 10) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await read() == expected:
            return True
        await asyncio.sleep(0.1)
    return False
