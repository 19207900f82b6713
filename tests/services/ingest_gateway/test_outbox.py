"""The outbox relay: staged events reach the broker confirmed and leave the outbox; while the broker cannot take
them they stay staged, and the relay says so; relays running side by side never take the same event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from faststream.rabbit import RabbitBroker, RabbitQueue
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway import outbox
from ingest_gateway.metrics import GatewayMetrics
from ingest_gateway.outbox import Relay
from libs.contracts import ExportReport
from libs.db.tables.outbox import OutboxMessage
from libs.messaging.broker import create_broker, declare_topology
from libs.messaging.publisher import Publisher
from libs.messaging.topology import TOPOLOGY
from libs.telemetry import setup_telemetry
from tests.services.ingest_gateway.conftest import staged

METRICS = GatewayMetrics.create(setup_telemetry("outbox-tests"))


@pytest.fixture
async def empty_outbox(engine: AsyncEngine) -> AsyncEngine:
    """Events other tests staged and left are not this test's to count."""
    async with engine.begin() as connection:
        await connection.execute(delete(OutboxMessage))
    return engine


@pytest.fixture
async def broker(rabbitmq_url: str) -> AsyncIterator[RabbitBroker]:
    broker = create_broker(rabbitmq_url, setup_telemetry("outbox-tests"), service="tests")
    await broker.connect()
    await declare_topology(broker, TOPOLOGY)
    yield broker
    await broker.stop()


@pytest.fixture
def publisher(broker: RabbitBroker) -> Publisher:
    return Publisher(broker, TOPOLOGY, setup_telemetry("outbox-tests"), timeout_s=5.0)


async def stage_exports(engine: AsyncEngine, count: int) -> list[str]:
    """Message ids of `count` report.export events, staged as a domain function stages them."""
    ids = [f"report.export:{uuid.uuid4()}" for _ in range(count)]
    async with engine.begin() as connection:
        for message_id in ids:
            await outbox.stage(connection, ExportReport(export_id=uuid.uuid4()), message_id)
    return ids


async def test_staged_events_are_published_and_leave_the_outbox_once_confirmed(
    empty_outbox: AsyncEngine, publisher: Publisher, broker: RabbitBroker
) -> None:
    [message_id] = await stage_exports(empty_outbox, 1)
    relay = Relay(empty_outbox, publisher, METRICS)
    assert await relay.relay_once() == 1
    assert await staged(empty_outbox, message_id) == []
    assert relay.failing is None
    # It is on the export queue, as the broker confirmed.
    queue = await broker.declare_queue(RabbitQueue(TOPOLOGY.queue_for("report.export"), declare=False))
    seen = []
    while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
        seen.append(message.message_id)
    assert message_id in seen


async def test_while_the_broker_cannot_take_them_events_stay_staged_and_the_relay_says_so(
    empty_outbox: AsyncEngine, broker_down: Publisher
) -> None:
    [message_id] = await stage_exports(empty_outbox, 1)
    relay = Relay(empty_outbox, broker_down, METRICS)
    assert await relay.relay_once() == 0
    assert len(await staged(empty_outbox, message_id)) == 1
    assert relay.failing is not None
    with pytest.raises(ConnectionError, match="1 events waiting"):
        await relay.check()()


async def test_relays_side_by_side_publish_each_event_once(empty_outbox: AsyncEngine, publisher: Publisher) -> None:
    ids = await stage_exports(empty_outbox, 60)
    relays = [Relay(empty_outbox, publisher, METRICS, batch=10) for _ in range(3)]

    async def drain(relay: Relay) -> int:
        confirmed = 0
        while sent := await relay.relay_once():
            confirmed += sent
        return confirmed

    assert sum(await asyncio.gather(*(drain(relay) for relay in relays))) == len(ids)
    assert [await staged(empty_outbox, message_id) for message_id in ids] == [[]] * len(ids)


async def test_a_running_relay_publishes_what_is_staged_after_it_is_woken(
    empty_outbox: AsyncEngine, publisher: Publisher
) -> None:
    relay = Relay(empty_outbox, publisher, METRICS)
    await relay.start()
    try:
        [message_id] = await stage_exports(empty_outbox, 1)
        relay.notify()
        async with asyncio.timeout(10):
            while await staged(empty_outbox, message_id):
                await asyncio.sleep(0.05)
        assert (await relay.check()())["pending"] == 0
    finally:
        await relay.stop()
