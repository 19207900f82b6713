"""FastStream's messaging durations are seconds, and the buckets they fall in are seconds too."""

from __future__ import annotations

import asyncio
import uuid

from faststream.rabbit import RabbitQueue

from libs.messaging.broker import create_broker
from libs.telemetry import setup_telemetry


def bucket_counts(exposition: str, metric: str) -> dict[str, float]:
    counts = {}
    for line in exposition.splitlines():
        if line.startswith(f"{metric}_bucket{{"):
            boundary = line.split('le="', 1)[1].split('"', 1)[0]
            counts[boundary] = float(line.rsplit(" ", 1)[1])
    return counts


def test_a_30_ms_message_falls_between_the_25_ms_and_50_ms_boundaries() -> None:
    telemetry = setup_telemetry("buckets-test")
    # The names and unit FastStream's telemetry middleware records under (faststream/opentelemetry/middleware.py).
    meter = telemetry.meter_provider.get_meter("opentelemetry.instrumentation.faststream")
    meter.create_histogram("messaging.process.duration", unit="s").record(0.030, {"messaging.system": "rabbitmq"})
    meter.create_histogram("messaging.publish.duration", unit="s").record(0.002, {"messaging.system": "rabbitmq"})

    exposition = telemetry.exposition().decode()

    process = bucket_counts(exposition, "messaging_process_duration_seconds")
    assert (process["0.025"], process["0.05"], process["+Inf"]) == (0.0, 1.0, 1.0)
    publish = bucket_counts(exposition, "messaging_publish_duration_seconds")
    assert (publish["0.005"], publish["0.01"]) == (1.0, 1.0)
    assert "5000.0" not in process


async def test_a_message_through_a_real_broker_lands_in_a_seconds_bucket(rabbitmq_url: str) -> None:
    telemetry = setup_telemetry("buckets-broker-test")
    broker = create_broker(rabbitmq_url, telemetry, service="buckets-broker-test")
    queue = RabbitQueue(f"buckets-test-{uuid.uuid4()}", auto_delete=True)
    handled = asyncio.Event()

    @broker.subscriber(queue)
    async def on_ping(body: str) -> None:
        handled.set()

    await broker.start()
    try:
        await broker.publish("ping", queue=queue)
        await asyncio.wait_for(handled.wait(), 10)
    finally:
        await broker.stop()

    process = bucket_counts(telemetry.exposition().decode(), "messaging_process_duration_seconds")
    assert process["+Inf"] == 1.0
    assert "0.005" in process
    assert "5000.0" not in process
