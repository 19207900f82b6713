"""Publishing that never succeeds silently: persistent, mandatory, confirmed, bounded in time."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aio_pika import DeliveryMode
from aio_pika import Message as AmqpMessage
from aio_pika.abc import AbstractExchange
from faststream.rabbit import RabbitBroker, RabbitExchange
from opentelemetry import context, propagate
from pamqp import encode

from libs.contracts import Message
from libs.logging import current_correlation_id
from libs.messaging.broker import EVENTS, EVENTS_LOOKUP, connection_user
from libs.messaging.headers import CORRELATION_ID
from libs.messaging.topology import Topology
from libs.telemetry import Telemetry

MAX_HEADER_BYTES = 64 * 1024
"""Headers and properties share one AMQP frame (131,072 bytes here): a larger one makes RabbitMQ close the whole
connection (FRAME_ERROR), with every consumer on it. Refused before sending instead."""


TRACEPARENT = "traceparent"


class PublishFailed(Exception):
    """The broker did not confirm the message in time, returned it as unroutable, or is unreachable."""


def header_bytes(headers: Mapping[str, Any]) -> int:
    """The headers' size on the wire; a table the encoder refuses counts as too large."""
    try:
        return len(encode.field_table(dict(headers)))
    except (TypeError, ValueError, struct.error, RecursionError):
        return MAX_HEADER_BYTES + 1


@dataclass(frozen=True)
class Envelope:
    """A contract message as it goes on the wire: what an outbox stores, and what `Publisher.send` publishes."""

    message_id: str
    message_type: str
    """Also its routing key on the events exchange, unless `routing_key` names another."""
    correlation_id: str
    body: bytes
    traceparent: str | None = None
    """The W3C trace context it was made in: sent later (from an outbox), it still continues that trace."""
    routing_key: str | None = None
    """The contract's `routed_as` (libs.contracts.Message), when it has one."""

    @property
    def route(self) -> str:
        return self.routing_key or self.message_type

    @classmethod
    def of(cls, message: Message, message_id: str | None = None, *, traced: bool = True) -> Envelope:
        """`message_id`: the consumers' idempotency key (a new one when None); the correlation id is the current
        request's, or the message id. `traced=False`: no trace context kept, for an envelope sent at once, in the
        trace it is made in."""
        message_id = message_id or str(uuid.uuid4())
        trace: dict[str, str] = {}
        if traced:
            propagate.inject(trace)
        return cls(
            message_id=message_id,
            message_type=message.message_type,
            correlation_id=current_correlation_id() or message_id,
            body=message.model_dump_json().encode(),
            traceparent=trace.get(TRACEPARENT),
            routing_key=message.routed_as,
        )


class Publisher:
    def __init__(self, broker: RabbitBroker, topology: Topology, telemetry: Telemetry, timeout_s: float) -> None:
        self.broker = broker
        self.topology = topology
        self.timeout_s = timeout_s
        self.sender = connection_user(broker)
        """The broker user this publisher sends as, when known; set as `user_id` where a consumer relies on it."""
        self._events: AbstractExchange | None = None
        """The events exchange as aio-pika's object, looked up on the first `send_staged` and again after a failure
        (a closed channel, a broker stopped and started again)."""
        self.enqueued = telemetry.meter.create_counter(
            "fmhl_jobs_enqueued_total",
            unit="",
            description="Messages published and confirmed, by target queue.",
        )

    async def publish(self, message: Message, *, message_id: str | None = None) -> str:
        """Publish a contract message on the events exchange; returns its message id once confirmed."""
        # Sent now, in the current trace: nothing to carry to a later context and attach again.
        envelope = Envelope.of(message, message_id, traced=False)
        await self.send(envelope)
        return envelope.message_id

    async def send(self, envelope: Envelope) -> None:
        """Publish an envelope on the events exchange, in the trace it was made in; returns once the broker
        confirmed it."""
        trace = context.attach(propagate.extract({TRACEPARENT: envelope.traceparent})) if envelope.traceparent else None
        try:
            await self.publish_raw(
                envelope.body,
                exchange=EVENTS,
                routing_key=envelope.route,
                message_type=envelope.message_type,
                message_id=envelope.message_id,
                correlation_id=envelope.correlation_id,
                headers={CORRELATION_ID: envelope.correlation_id},
            )
        finally:
            if trace is not None:
                context.detach(trace)
        self.enqueued.add(1, {"queue": self.topology.queue_for(envelope.route)})

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
        async with self._confirmed(routing_key):
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

    async def send_staged(self, envelope: Envelope) -> None:
        """`send` for an envelope that carries its trace context (an outbox's row, published after its request
        ended): the context goes in the headers as it is, so the consumer continues that trace, with no publish
        span and no FastStream middleware per message (measured: FastStream's publish path with its telemetry
        middleware was 6% of the ingest-gateway's CPU per lead). The same message properties, confirms, timeout
        and PublishFailed as `send`."""
        headers: dict[str, Any] = {CORRELATION_ID: envelope.correlation_id}
        if envelope.traceparent:
            headers[TRACEPARENT] = envelope.traceparent
        message = AmqpMessage(
            envelope.body,
            content_type="application/json",
            delivery_mode=DeliveryMode.PERSISTENT,
            correlation_id=envelope.correlation_id,
            message_id=envelope.message_id,
            type=envelope.message_type,
            headers=headers,
            timestamp=datetime.now(UTC),
            app_id=self.broker.config.app_id,
        )
        try:
            async with self._confirmed(envelope.route):
                events = self._events or await self.broker.declare_exchange(EVENTS_LOOKUP)
                await events.publish(message, routing_key=envelope.route, mandatory=True)
        except PublishFailed:
            self._events = None
            raise
        self._events = events
        self.enqueued.add(1, {"queue": self.topology.queue_for(envelope.route)})

    @contextlib.asynccontextmanager
    async def _confirmed(self, routing_key: str) -> AsyncIterator[None]:
        """Bounds a publish by the timeout; every way it can fail becomes PublishFailed."""
        try:
            async with asyncio.timeout(self.timeout_s):
                yield
        except TimeoutError as error:
            raise PublishFailed(f"no confirm for {routing_key} within {self.timeout_s:g}s") from error
        except asyncio.CancelledError as error:
            # aiormq cancels the confirm it awaits when it gives up on the connection: that is a failed publish.
            # Only a cancellation of this task itself (shutdown, a caller's own timeout) goes on as one.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise PublishFailed(f"{routing_key}: the broker connection closed before the confirm") from error
        except Exception as error:
            raise PublishFailed(f"{routing_key}: {type(error).__name__}: {error}") from error
