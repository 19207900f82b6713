"""Publishing never succeeds silently: unroutable messages and a closed connection raise PublishFailed."""

import uuid

import pytest

from libs.contracts import ExportReport
from libs.messaging.broker import EVENTS, create_broker, declare_topology
from libs.messaging.publisher import Publisher, PublishFailed
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
