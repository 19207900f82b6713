"""Publishing never succeeds silently: unroutable messages and a closed connection raise PublishFailed; an outbox's
envelope goes out with its own properties and trace context."""

import uuid
from collections.abc import AsyncIterator

import pytest
from aio_pika import DeliveryMode
from aio_pika.abc import AbstractQueue
from faststream.rabbit import RabbitBroker, RabbitQueue

from libs.contracts import ExportReport, Mail, SendEmail, SendEmails
from libs.messaging.broker import EVENTS, create_broker, declare_topology
from libs.messaging.headers import CORRELATION_ID
from libs.messaging.publisher import Envelope, Publisher, PublishFailed
from libs.messaging.topology import TOPOLOGY
from libs.telemetry import setup_telemetry


async def test_an_unroutable_message_is_an_error_not_a_silent_success(rabbitmq_url: str) -> None:
    telemetry = setup_telemetry("test")
    broker = create_broker(rabbitmq_url, telemetry, service="test")
    await broker.connect()
    await declare_topology(broker, TOPOLOGY)
    publisher = Publisher(broker, TOPOLOGY, telemetry, timeout_s=5.0)
    try:
        with pytest.raises(PublishFailed):
            await publisher.publish_raw(
                b"{}", exchange=EVENTS, routing_key="nothing.binds.this", message_id="m", correlation_id="c", headers={}
            )
    finally:
        await broker.stop()


async def test_a_closed_connection_fails_fast_instead_of_hanging(rabbitmq_url: str) -> None:
    telemetry = setup_telemetry("test")
    broker = create_broker(rabbitmq_url, telemetry, service="test")
    await broker.connect()
    publisher = Publisher(broker, TOPOLOGY, telemetry, timeout_s=2.0)
    await broker.stop()
    with pytest.raises(PublishFailed):
        await publisher.publish(ExportReport(export_id=uuid.uuid4()))


@pytest.fixture
async def broker(rabbitmq_url: str) -> AsyncIterator[RabbitBroker]:
    broker = create_broker(rabbitmq_url, setup_telemetry("test"), service="test-publisher")
    await broker.connect()
    await declare_topology(broker, TOPOLOGY)
    yield broker
    await broker.stop()


async def bound_queue(broker: RabbitBroker) -> tuple[str, AbstractQueue]:
    """A routing key of its own and the queue it lands in, on the events exchange."""
    routing_key = f"test.staged.{uuid.uuid4().hex}"
    queue = await broker.declare_queue(RabbitQueue(routing_key, exclusive=True, auto_delete=True))
    await queue.bind(await broker.declare_exchange(EVENTS), routing_key=routing_key)
    return routing_key, queue


async def test_a_staged_envelope_arrives_with_its_properties_and_the_trace_it_was_made_in(
    broker: RabbitBroker,
) -> None:
    routing_key, queue = await bound_queue(broker)
    traceparent = f"00-{uuid.uuid4().hex}-00f067aa0ba902b7-01"
    envelope = Envelope("m-1", routing_key, "c-1", b'{"a": 1}', traceparent)
    await Publisher(broker, TOPOLOGY, setup_telemetry("test"), timeout_s=5.0).send_staged(envelope)
    message = await queue.get(timeout=5)
    assert message is not None
    assert message.body == b'{"a": 1}'
    assert (message.message_id, message.correlation_id, message.type) == ("m-1", "c-1", routing_key)
    assert message.delivery_mode == DeliveryMode.PERSISTENT
    assert message.headers == {CORRELATION_ID: "c-1", "traceparent": traceparent}
    assert (message.content_type, message.app_id) == ("application/json", "test-publisher")


async def test_an_unroutable_staged_envelope_is_an_error(broker: RabbitBroker) -> None:
    publisher = Publisher(broker, TOPOLOGY, setup_telemetry("test"), timeout_s=5.0)
    with pytest.raises(PublishFailed):
        await publisher.send_staged(Envelope("m-1", "nothing.binds.this", "c-1", b"{}"))


async def test_staged_envelopes_are_sent_again_once_a_stopped_broker_is_back(broker: RabbitBroker) -> None:
    publisher = Publisher(broker, TOPOLOGY, setup_telemetry("test"), timeout_s=2.0)
    routing_key, _ = await bound_queue(broker)
    await publisher.send_staged(Envelope("m-1", routing_key, "c-1", b"{}"))
    await broker.stop()
    with pytest.raises(PublishFailed):
        await publisher.send_staged(Envelope("m-2", routing_key, "c-2", b"{}"))
    await broker.connect()
    routing_key, queue = await bound_queue(broker)
    await publisher.send_staged(Envelope("m-3", routing_key, "c-3", b"{}"))
    message = await queue.get(timeout=5)
    assert message is not None
    assert message.message_id == "m-3"


async def test_a_message_routed_as_another_goes_by_that_ones_routing_key_with_its_own_type(
    broker: RabbitBroker,
) -> None:
    routing_key, queue = await bound_queue(broker)
    envelope = Envelope("m-2", "test.bundle", "c-2", b"{}", routing_key=routing_key)
    await Publisher(broker, TOPOLOGY, setup_telemetry("test"), timeout_s=5.0).send(envelope)
    message = await queue.get(timeout=5)
    assert message is not None
    assert (message.message_id, message.type, message.routing_key) == ("m-2", "test.bundle", routing_key)


def test_an_envelope_of_a_command_of_mails_is_routed_as_a_single_mail() -> None:
    mail = Mail(job_id="email:new_lead:1", template="new_lead", to="p@example.com")
    envelope = Envelope.of(SendEmails(mails=[mail]))
    assert (envelope.message_type, envelope.route) == (SendEmails.message_type, SendEmail.message_type)
