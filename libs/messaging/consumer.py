"""The consumer policy every worker shares: decode, handle, retry with backoff, dead-letter with context.

One delivery ends in exactly one of: ack after success; a confirmed copy in the next delay queue, then ack;
a confirmed copy on the dead-letter exchange with the error headers, then ack. Only when even that
publish fails is the delivery nacked back to its queue, where the broker's delivery limit still bounds it.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitQueue, RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from pydantic import ValidationError

from libs.contracts import DeadLetterRetrySucceeded, Message
from libs.logging import correlation_scope, get_logger
from libs.messaging import headers as h
from libs.messaging.broker import DEAD_LETTERS
from libs.messaging.errors import SchemaMismatch, UndecodableBody, UnknownMessageType, is_permanent
from libs.messaging.publisher import Publisher
from libs.messaging.topology import WorkQueue
from libs.telemetry import Telemetry, duration_histogram

log = get_logger("fmhl.consumer")


@dataclass(frozen=True)
class Delivery:
    """What a handler may need to know about the delivery besides the message itself."""

    message_id: str
    correlation_id: str | None
    attempt: int
    redelivered: bool
    headers: Mapping[str, Any]


Handler = Callable[[Any, Delivery], Awaitable[None]]


def decode(message_types: Mapping[str, type[Message]], message_type: str | None, body: bytes) -> Message:
    contract = message_types.get(message_type or "")
    if contract is None:
        raise UnknownMessageType(f"no handler for message type {message_type!r}")
    try:
        data = orjson.loads(body)
    except (orjson.JSONDecodeError, RecursionError, ValueError) as error:
        raise UndecodableBody(f"body is not valid JSON: {error}") from None
    try:
        return contract.model_validate(data)
    except ValidationError as error:
        fields = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:10])
        raise SchemaMismatch(f"{message_type}: {fields}") from None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _carried_headers(raw: AbstractIncomingMessage) -> dict[str, Any]:
    """Our headers and the trace context survive a republish; the broker's `x-` bookkeeping does not."""
    return {key: value for key, value in (raw.headers or {}).items() if not key.startswith("x-")}


class ConsumerPolicy:
    def __init__(
        self,
        queue: WorkQueue,
        handlers: Mapping[type[Message], Handler],
        publisher: Publisher,
        telemetry: Telemetry,
        *,
        service: str,
        handler_timeout_s: float = 30.0,
    ) -> None:
        self.queue = queue
        self.handlers = {contract.message_type: handler for contract, handler in handlers.items()}
        self.message_types = {contract.message_type: contract for contract in handlers}
        self.publisher = publisher
        self.service = service
        self.handler_timeout_s = handler_timeout_s
        meter = telemetry.meter
        self.completed = meter.create_counter(
            "fmhl_jobs_completed_total", unit="", description="Messages handled successfully."
        )
        self.failed = meter.create_counter(
            "fmhl_jobs_failed_total",
            unit="",
            description="Failed deliveries, by outcome (retried, dead_lettered).",
        )
        self.duration = duration_histogram(meter, "fmhl_job_duration_ms", "Handling time of one delivery.")

    async def handle(self, message: RabbitMessage) -> None:
        raw = message.raw_message
        previous = (raw.headers or {}).get(h.ATTEMPT)
        attempt = (previous if isinstance(previous, int) else 0) + 1
        with correlation_scope(raw.correlation_id):
            started = time.perf_counter()
            labels = {"queue": self.queue.name}
            try:
                async with asyncio.timeout(self.handler_timeout_s):
                    decoded = decode(self.message_types, raw.type, raw.body)
                    delivery = Delivery(
                        message_id=raw.message_id or "",
                        correlation_id=raw.correlation_id,
                        attempt=attempt,
                        redelivered=bool(raw.redelivered),
                        headers=raw.headers or {},
                    )
                    await self.handlers[decoded.message_type](decoded, delivery)
            except Exception as error:
                self.duration.record((time.perf_counter() - started) * 1000, labels)
                try:
                    outcome = await self._fail(raw, error, attempt)
                except Exception as publish_error:
                    log.error("message.failure_not_recorded", publish_error, {"queue": self.queue.name})
                    await message.nack(requeue=True)
                    return
                self.failed.add(1, {**labels, "outcome": outcome})
                await message.ack()
                return
            self.duration.record((time.perf_counter() - started) * 1000, labels)
            self.completed.add(1, labels)
            await self._report_retry_success(raw)
            await message.ack()
            log.debug("message.handled", {"queue": self.queue.name, "type": raw.type, "attempt": attempt})

    async def _report_retry_success(self, raw: AbstractIncomingMessage) -> None:
        """A message retried from the DLQ carries its entry id; its success resolves the entry."""
        header = (raw.headers or {}).get(h.DLQ_ENTRY)
        if header is None:
            return
        entry = header.decode() if isinstance(header, bytes) else str(header)
        try:
            await self.publisher.publish(
                DeadLetterRetrySucceeded(entry_id=entry, queue=self.queue.name, message_id=raw.message_id or ""),
                message_id=f"retry-succeeded:{entry}:{raw.message_id}",
            )
        except Exception as error:
            # The work is done; only the entry's automatic resolution is missing, and the log says which.
            log.error("dlq.retry_success_not_reported", error, {"entry_id": str(entry)})

    async def _fail(self, raw: AbstractIncomingMessage, error: Exception, attempt: int) -> str:
        permanent = is_permanent(error)
        carried = _carried_headers(raw)
        now = _now()
        context = {
            h.ATTEMPT: attempt,
            h.FIRST_FAILURE_AT: carried.get(h.FIRST_FAILURE_AT, now),
            h.LAST_FAILURE_AT: now,
            h.ORIGINAL_EXCHANGE: carried.get(h.ORIGINAL_EXCHANGE, raw.exchange or ""),
            h.ORIGINAL_QUEUE: self.queue.name,
            h.ORIGINAL_ROUTING_KEY: carried.get(h.ORIGINAL_ROUTING_KEY, raw.routing_key or ""),
            h.ERROR_TYPE: type(error).__name__,
            h.ERROR_CLASS: "permanent" if permanent else "transient",
            h.ERROR_MESSAGE: str(error)[: h.MAX_MESSAGE_CHARS],
        }
        metadata = {
            "queue": self.queue.name,
            "type": raw.type,
            "attempt": attempt,
            "message_id": raw.message_id,
        }
        if not permanent and attempt < self.queue.max_attempts:
            await self.publisher.publish_raw(
                raw.body,
                exchange=None,
                routing_key=self.queue.delay_queue(attempt),
                message_id=raw.message_id,
                correlation_id=raw.correlation_id,
                message_type=raw.type,
                content_type=raw.content_type,
                headers={**carried, **context},
            )
            log.warn("message.retry_scheduled", {**metadata, "error": context[h.ERROR_MESSAGE],
                     "delay_ms": self.queue.retry_delays_ms[attempt - 1]})  # fmt: skip
            return "retried"
        stack = "".join(traceback.format_exception(error))[-h.MAX_STACK_CHARS :]
        await self.publisher.publish_raw(
            raw.body,
            exchange=DEAD_LETTERS,
            routing_key=self.queue.name,
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            message_type=raw.type,
            content_type=raw.content_type,
            headers={
                **carried,
                **context,
                h.REASON: "error",
                h.ATTEMPTS: attempt,
                h.SERVICE: self.service,
                h.ERROR_STACK: stack,
            },
        )
        log.error("message.dead_lettered", error, metadata)
        return "dead_lettered"


async def keep_body_raw(message: StreamMessage[Any]) -> bytes:
    """FastStream would parse an `application/json` body before the handler runs, and a malformed one
    would then fail outside the policy and stay unacked. The policy decodes it itself."""
    return message.body


def subscribe(router: RabbitRouter, policy: ConsumerPolicy) -> None:
    """Register the policy as the one consumer of its work queue (declared beforehand by declare_topology)."""

    @router.subscriber(
        RabbitQueue(policy.queue.name, declare=False), ack_policy=AckPolicy.MANUAL, decoder=keep_body_raw
    )
    async def consume(message: RabbitMessage) -> None:
        await policy.handle(message)
