"""The `dlq` queue's own aio-pika consumer: re-created after its connection drops, and on stop cancelled before
the letters it is recording are waited for, so what they commit is acked and nothing new arrives meanwhile."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import quote

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker

from dlq_service.capture_consumer import CaptureConsumer
from libs.messaging.broker import create_broker, queue_counts
from libs.messaging.outage import Breaker
from libs.telemetry import setup_telemetry
from tests.services.conftest import eventually


@dataclass
class Recorder:
    """A handler that acks each letter once `released` is set (at once, unless a test clears it first)."""

    handled: list[str] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        self.handled.append(message.message_id or "")
        await self.released.wait()
        await message.ack()


@dataclass
class Consuming:
    broker: RabbitBroker
    queue: str
    service: str
    recorder: Recorder
    consumer: CaptureConsumer


@pytest.fixture
async def consuming(rabbitmq_url: str) -> AsyncIterator[Consuming]:
    """A started CaptureConsumer on a queue of the test's own, over a broker connection named after the test."""
    service = f"test-capture-{uuid.uuid4().hex[:8]}"
    broker = create_broker(rabbitmq_url, setup_telemetry(service), service=service, prefetch=10)
    await broker.connect()
    queue = f"{service}-dlq"
    async with await aio_pika.connect(rabbitmq_url) as connection:
        await (await connection.channel()).declare_queue(queue, durable=True)
    recorder = Recorder()
    recorder.released.set()
    consumer = CaptureConsumer(broker, queue, recorder, Breaker(queue), prefetch=10)
    await consumer.start()
    yield Consuming(broker, queue, service, recorder, consumer)
    await consumer.stop()
    await broker.stop()
    async with await aio_pika.connect(rabbitmq_url) as connection:
        await (await connection.channel()).queue_delete(queue)


async def publish(rabbitmq_url: str, queue: str, *message_ids: str) -> None:
    async with await aio_pika.connect(rabbitmq_url) as connection:
        channel = await connection.channel()
        for message_id in message_ids:
            await channel.default_exchange.publish(aio_pika.Message(b"{}", message_id=message_id), queue)


async def ready_and_consumers(rabbitmq_url: str, queue: str) -> tuple[int, int]:
    async with await aio_pika.connect(rabbitmq_url) as connection:
        declared = await (await connection.channel()).declare_queue(queue, passive=True)
        result = declared.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)


async def close_connections_named(rabbitmq_url: str, management_url: str, name: str) -> int:
    """Closes, from the broker's side, every connection of the test's vhost named `name`; how many there were."""
    vhost = quote(httpx.URL(rabbitmq_url).path.lstrip("/") or "/", safe="")
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(f"{management_url}/api/vhosts/{vhost}/connections")
        answer.raise_for_status()
        names = [connection["name"] for connection in answer.json()
                 if connection.get("client_properties", {}).get("connection_name") == name]  # fmt: skip
        for connection_name in names:
            closed = await client.delete(f"{management_url}/api/connections/{quote(connection_name, safe='')}")
            closed.raise_for_status()
    return len(names)


async def test_the_consumer_is_created_again_after_its_connection_drops(
    consuming: Consuming, rabbitmq_url: str, service_env: dict[str, str]
) -> None:
    await publish(rabbitmq_url, consuming.queue, "before")

    async def handled_before() -> bool:
        return consuming.recorder.handled == ["before"]

    await eventually(handled_before)
    management_url = service_env["RABBITMQ_MANAGEMENT_URL"]

    async def closed() -> bool:  # the management API lists a new connection a few seconds late
        return await close_connections_named(rabbitmq_url, management_url, consuming.service) > 0

    await eventually(closed)
    await publish(rabbitmq_url, consuming.queue, "after")

    async def handled_after() -> bool:
        return "after" in consuming.recorder.handled

    await eventually(handled_after, timeout=30)

    async def settled() -> bool:
        return await queue_counts(consuming.broker, consuming.queue) == (0, 1)

    await eventually(settled)


async def test_stopping_cancels_the_consumer_first_then_acks_the_letters_being_recorded(
    consuming: Consuming, rabbitmq_url: str
) -> None:
    consuming.recorder.released.clear()
    await publish(rabbitmq_url, consuming.queue, "a", "b", "c")

    async def all_in_hand() -> bool:
        return sorted(consuming.recorder.handled) == ["a", "b", "c"]

    await eventually(all_in_hand)
    stopping = asyncio.create_task(consuming.consumer.stop())

    async def cancelled() -> bool:
        return (await ready_and_consumers(rabbitmq_url, consuming.queue))[1] == 0

    await eventually(cancelled)
    await publish(rabbitmq_url, consuming.queue, "late")
    assert not stopping.done()  # still waiting for the three letters' handlers
    consuming.recorder.released.set()
    await stopping
    await consuming.broker.stop()  # whatever was not acked would be back in the queue now
    assert await ready_and_consumers(rabbitmq_url, consuming.queue) == (1, 0)
    assert sorted(consuming.recorder.handled) == ["a", "b", "c"]
