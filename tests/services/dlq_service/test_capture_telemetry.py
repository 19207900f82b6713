"""What capture tells about its letters: a batch's one log line with each letter's entry and identifiers, the trace
each letter arrived in (which the batch's span links to), and no span per delivery from the broker's middleware."""

from __future__ import annotations

import dataclasses
import logging
import uuid

import aio_pika
import pytest
from faststream.rabbit import RabbitQueue, RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dlq_service.capture import Captured, CaptureOutcome
from dlq_service.subscribers import arrived_in, received_line
from libs.logging import log_record_fields
from libs.messaging.broker import DEAD_LETTERS, EVENTS, create_broker
from libs.messaging.consumer import keep_body_raw
from libs.messaging.topology import DLQ_QUEUE
from libs.telemetry import Telemetry, setup_telemetry
from tests.services.conftest import eventually
from tests.services.dlq_service.test_capture_batches import letter


@pytest.fixture
def spans() -> tuple[Telemetry, InMemorySpanExporter]:
    """A process's telemetry whose spans are all recorded, kept in memory for the test to read."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return dataclasses.replace(setup_telemetry("test-capture"), tracer_provider=tracer_provider), exporter


def test_the_batch_line_names_each_letters_entry_and_correlation_id_and_masks_contact_data() -> None:
    entry = uuid.uuid4()
    line = received_line([
        (letter("email", "m-1", correlation_id="request-7"), Captured(entry, CaptureOutcome.new)),
        (letter("email", "m-2", correlation_id="ada@example.com"), Captured(None, CaptureOutcome.duplicate)),
    ])  # fmt: skip
    assert line["letters"] == 2
    assert line["entries"][0] == {
        "entry_id": str(entry), "outcome": "new", "queue": "email", "reason": "error", "error_type": "SmtpRefused",
        "message_id": "m-1", "correlation_id": "request-7",
    }  # fmt: skip
    logged = log_record_fields(logging.makeLogRecord({"msg": "dead_letters.received", "metadata": line}), "x")
    assert "ada@example.com" not in str(logged["metadata"])
    assert logged["metadata"]["entries"][0]["correlation_id"] == "request-7"


def test_a_letters_trace_is_read_from_its_traceparent_and_a_malformed_one_is_none() -> None:
    origin = arrived_in({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert origin is not None
    assert origin.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert arrived_in({"traceparent": "00-nope-01"}) is None
    assert arrived_in({"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}) is None
    assert arrived_in(None) is None


async def test_deliveries_through_the_dead_letter_exchange_get_no_span_from_the_broker(
    rabbitmq_url: str, spans: tuple[Telemetry, InMemorySpanExporter]
) -> None:
    """Their consumer traces them (capture's batch span); every other delivery keeps its span per message."""
    telemetry, exporter = spans
    name = f"test-traced-{uuid.uuid4().hex[:8]}"
    router = RabbitRouter()
    handled: list[str] = []

    @router.subscriber(RabbitQueue(name, auto_delete=True), decoder=keep_body_raw, no_reply=True)
    async def on_message(message: RabbitMessage) -> None:
        handled.append(message.raw_message.exchange or "")

    broker = create_broker(rabbitmq_url, telemetry, service="test", routers=[router])
    await broker.start()
    dead_letter_id = f"traced-{name}"
    try:
        queue = await broker.declare_queue(RabbitQueue(name, auto_delete=True))
        for declared, key in ((DEAD_LETTERS, ""), (EVENTS, name)):
            await queue.bind(await broker.declare_exchange(declared), routing_key=key)
        async with await aio_pika.connect(rabbitmq_url) as connection:
            channel = await connection.channel()
            for exchange_name, key, message_id in ((DEAD_LETTERS.name, "", dead_letter_id), (EVENTS.name, name, name)):
                exchange = await channel.get_exchange(exchange_name)
                await exchange.publish(aio_pika.Message(b"{}", message_id=message_id), routing_key=key)

            async def both_handled() -> bool:
                return len(handled) == 2

            await eventually(both_handled)
            await take_off_the_dlq(channel, dead_letter_id)
    finally:
        await broker.stop()
    assert sorted(handled) == sorted([DEAD_LETTERS.name, EVENTS.name])
    consumed = [span.name for span in exporter.get_finished_spans() if span.name.endswith(" process")]
    assert consumed == [f"{EVENTS.name}.{name} process"]


async def take_off_the_dlq(channel: aio_pika.abc.AbstractChannel, message_id: str) -> None:
    """The fanout also put the test's dead letter on `dlq`, where a later test's dlq-service would record it."""
    dlq = await channel.get_queue(DLQ_QUEUE)
    others = []
    while (message := await dlq.get(fail=False)) is not None:
        if message.message_id == message_id:
            await message.ack()
            break
        others.append(message)
    for other in others:
        await other.nack(requeue=True)
