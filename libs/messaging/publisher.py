"""Publishing that never succeeds silently: persistent, mandatory, confirmed, bounded in time."""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import Mapping
from typing import Any

from faststream.rabbit import RabbitBroker, RabbitExchange
from pamqp import encode

from libs.contracts import Message
from libs.logging import current_correlation_id
from libs.messaging.broker import EVENTS, connection_user
from libs.messaging.headers import CORRELATION_ID
from libs.messaging.topology import Topology
from libs.telemetry import Telemetry

MAX_HEADER_BYTES = 64 * 1024
"""Headers and properties share one AMQP frame (131,072 bytes here): a larger one makes RabbitMQ close the whole
connection (FRAME_ERROR), with every consumer on it. Refused before sending instead."""


class PublishFailed(Exception):
    """The broker did not confirm the message in time, returned it as unroutable, or is unreachable."""


def header_bytes(headers: Mapping[str, Any]) -> int:
    """The headers' size on the wire; a table the encoder refuses counts as too large."""
    try:
        return len(encode.field_table(dict(headers)))
    except (TypeError, ValueError, struct.error, RecursionError):
        return MAX_HEADER_BYTES + 1


class Publisher:
    def __init__(self, broker: RabbitBroker, topology: Topology, telemetry: Telemetry, timeout_s: float) -> None:
        self.broker = broker
        self.topology = topology
        self.timeout_s = timeout_s
        self.sender = connection_user(broker)
        """The broker user this publisher sends as, when known; set as `user_id` where a consumer relies on it."""
        self.enqueued = telemetry.meter.create_counter(
            "fmhl_jobs_enqueued_total",
            unit="",
            description="Messages published and confirmed, by target queue.",
        )

    async def publish(self, message: Message, *, message_id: str | None = None) -> str:
        """Publish a contract message on the events exchange; returns its message id once confirmed."""
        message_id = message_id or str(uuid.uuid4())
        correlation_id = current_correlation_id() or message_id
        await self.publish_raw(
            message.model_dump_json().encode(),
            exchange=EVENTS,
            routing_key=message.message_type,
            message_type=message.message_type,
            message_id=message_id,
            correlation_id=correlation_id,
            headers={CORRELATION_ID: correlation_id},
        )
        self.enqueued.add(1, {"queue": self.topology.queue_for(message.message_type)})
        return message_id

    async def publish_raw(
        self,
        body: bytes,
        *,
        exchange: RabbitExchange | None,
        routing_key: str,
        message_id: str | None,
        correlation_id: str | None,
        headers: Mapping[str, Any],
        message_type: str | None = None,
        content_type: str | None = "application/json",
        user_id: str | None = None,
    ) -> None:
        """`user_id`: RabbitMQ refuses the publish unless it names this connection's own user."""
        if (size := header_bytes(headers)) > MAX_HEADER_BYTES:
            raise PublishFailed(f"{routing_key}: headers of {size} bytes exceed {MAX_HEADER_BYTES}")
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.broker.publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    mandatory=True,
                    persist=True,
                    message_id=message_id,
                    correlation_id=correlation_id,
                    message_type=message_type,
                    content_type=content_type,
                    headers=dict(headers),
                    user_id=user_id,
                )
        except TimeoutError as error:
            raise PublishFailed(f"no confirm for {routing_key} within {self.timeout_s:g}s") from error
        except Exception as error:
            raise PublishFailed(f"{routing_key}: {type(error).__name__}: {error}") from error
