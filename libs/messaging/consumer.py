"""The consumer policy every worker shares: decode, handle, retry with backoff, dead-letter with context.

One delivery ends in exactly one of: ack after success; a confirmed copy in the next delay queue, then ack;
a confirmed copy on the dead-letter exchange with the error headers, then ack. Only when even that
publish fails is the delivery nacked back to its queue, where the broker's delivery limit still bounds it.
A failure that says a dependency is unavailable costs no attempt at all: the queue's breaker
(libs/messaging/outage.py) pauses, the delivery is held unacked (prefetch then stops new ones) and handled
again once the dependency answers; a stop while paused hands it back to the broker unhandled.

What a message says about itself is data, not authority: the failure headers (`fmhl-attempt`, `fmhl-reason`,
`fmhl-error-*`, `fmhl-original-*`, `fmhl-first-failure-at`, ...) are believed only on a message this policy sent
to one of its own delay queues, which the broker vouches for twice: `x-death` names that delay queue and the
`user_id` property, which RabbitMQ checks against the publishing connection, is this service's own user. Any
other message is a first delivery whose failure headers are overwritten. Nobody gets a reply: `reply_to` is
ignored, so a publisher cannot make a worker send messages on its behalf.
"""

from __future__ import annotations

import asyncio
import math
import time
import traceback
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitBroker, RabbitQueue, RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from pydantic import ValidationError

from libs.contracts import DeadLetterRetrySucceeded, Message
from libs.logging import correlation_scope, get_logger
from libs.messaging import headers as h
from libs.messaging.broker import DEAD_LETTERS
from libs.messaging.errors import (
    MissingMessageId,
    SchemaMismatch,
    UndecodableBody,
    UndecodableProperties,
    UnknownMessageType,
    is_permanent,
)
from libs.messaging.outage import Breaker, Outages, Verdict, channel_open, describe
from libs.messaging.publisher import MAX_HEADER_BYTES, Publisher, header_bytes
from libs.messaging.topology import WorkQueue
from libs.messaging.wire import UNDECODABLE_PROPERTIES, is_clean, printable, raw_bytes, short_text, undecodable
from libs.telemetry import Telemetry, duration_histogram

log = get_logger("fmhl.consumer")

_OUTAGES: weakref.WeakKeyDictionary[RabbitBroker, Outages] = weakref.WeakKeyDictionary()
"""The process's Outages by broker (`pause_on_outages`), from which every policy it runs takes its breaker."""


@dataclass(frozen=True)
class Delivery:
    """What a handler may need to know about the delivery besides the message itself."""

    message_id: str
    correlation_id: str | None
    attempt: int
    redelivered: bool
    headers: Mapping[str, Any]


Handler = Callable[[Any, Delivery], Awaitable[None]]


@dataclass(frozen=True)
class Arrival:
    """A delivery as the policy reads it: every property printable, the headers it may carry on, and the attempt
    as our own retry path counted it."""

    message_id: str | None
    correlation_id: str | None
    message_type: str | None
    content_type: str | None
    exchange: str
    routing_key: str
    attempts_before: int
    carried: dict[str, Any]
    undecodable: list[str]
    raw_properties: dict[str, bytes]

    @property
    def attempt(self) -> int:
        return self.attempts_before + 1


FLOAT32_MAX = 3.4028234663852886e38


def publishable(value: Any) -> Any:
    """A header value the AMQP encoder accepts again, as close to what arrived as it can be: text read from invalid
    UTF-8 becomes printable (names cut to a short string), raw bytes a byte array, a double past what pamqp's
    32-bit float encoding holds becomes text."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, Mapping):
        return {short_text(str(key)) or "": publishable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [publishable(item) for item in value]
    if isinstance(value, float) and math.isfinite(value) and abs(value) > FLOAT32_MAX:
        return str(value)
    return value


def attempts_so_far(queue: WorkQueue, headers: Mapping[str, Any], user_id: str | None, sender: str | None) -> int:
    """Failed deliveries before this one, as our own retry path recorded them. Only a message this service sent
    (the broker refuses any other `user_id` than the publishing connection's) that came back from one of this
    queue's delay queues has any; everything else is a first delivery, whatever its headers claim."""
    if sender is None or user_id != sender:
        return 0
    deaths = headers.get("x-death")
    if not isinstance(deaths, list):
        return 0
    for death in deaths:
        if isinstance(death, Mapping) and death.get("reason") == "expired":
            attempt = queue.delay_attempt(str(death.get("queue")))
            if attempt is not None:
                return attempt
    return 0


def carried_headers(headers: Mapping[str, Any], *, ours: bool) -> dict[str, Any]:
    """What survives a republish: never the broker's `x-` bookkeeping, and failure headers only when `ours`."""
    return {
        short_text(key) or "": publishable(value)
        for key, value in headers.items()
        if not key.startswith("x-") and (ours or not h.is_failure_header(key))
    }


def read_arrival(raw: AbstractIncomingMessage, queue: WorkQueue, sender: str | None) -> Arrival:
    headers = raw.headers or {}
    properties = {"message_id": raw.message_id, "correlation_id": raw.correlation_id, "type": raw.type,
                  "content_type": raw.content_type, "content_encoding": raw.content_encoding,
                  "reply_to": raw.reply_to, "user_id": raw.user_id, "app_id": raw.app_id,
                  "routing_key": raw.routing_key}  # fmt: skip
    attempts_before = attempts_so_far(queue, headers, raw.user_id, sender)
    return Arrival(
        message_id=short_text(raw.message_id),
        correlation_id=short_text(raw.correlation_id),
        message_type=short_text(raw.type),
        content_type=short_text(raw.content_type),
        exchange=printable(raw.exchange or ""),
        routing_key=printable(raw.routing_key or ""),
        attempts_before=attempts_before,
        carried=carried_headers(headers, ours=attempts_before > 0),
        undecodable=undecodable(properties, headers),
        raw_properties={
            name: raw_bytes(value)
            for name, value in properties.items()
            if isinstance(value, str) and not is_clean(value)
        },
    )


def refuse_unidentifiable(arrival: Arrival) -> None:
    """A message that cannot be named or deduplicated is not handled: it goes to the DLQ with its raw bytes."""
    if arrival.undecodable:
        raise UndecodableProperties(f"not valid UTF-8: {', '.join(arrival.undecodable)}")
    if not arrival.message_id:
        raise MissingMessageId("the message has no message_id, so a redelivery could not be told from a new message")


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


def retry_link(headers: Mapping[str, Any]) -> tuple[uuid.UUID, int, str] | None:
    """Entry, retry and signature of a message retried from the DLQ, when it carries a well-formed set of them."""
    entry, retry, signature = (headers.get(name) for name in (h.DLQ_ENTRY, h.DLQ_RETRY, h.DLQ_SIGNATURE))
    if entry is None:
        return None
    try:
        entry_id = uuid.UUID(entry.decode() if isinstance(entry, bytes) else str(entry))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(retry, int) or isinstance(retry, bool) or not isinstance(signature, str):
        return None
    return entry_id, retry, signature


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


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
        breaker: Breaker | None = None,
    ) -> None:
        """`breaker`: None takes this queue's breaker from the Outages of its publisher's broker, the one it
        consumes from (`pause_on_outages`, which every ServiceRuntime calls), when the first delivery arrives; a
        policy on a broker without any gets one of its own, without probes (the held delivery itself is the
        probe)."""
        self.queue = queue
        self.handlers = {contract.message_type: handler for contract, handler in handlers.items()}
        self.message_types = {contract.message_type: contract for contract in handlers}
        self.publisher = publisher
        self.service = service
        self.handler_timeout_s = handler_timeout_s
        self.breaker = breaker
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

    def adopt(self, outages: Outages | None) -> Breaker:
        """The breaker this policy reports to, chosen once: its own if given, else its queue's in `outages`."""
        if self.breaker is None:
            self.breaker = outages.breaker(self.queue.name) if outages is not None else Breaker(self.queue.name)
        return self.breaker

    async def handle(self, message: RabbitMessage) -> None:
        raw = message.raw_message
        breaker = self.breaker or self.adopt(_OUTAGES.get(self.publisher.broker))
        arrival = read_arrival(raw, self.queue, self.publisher.sender)
        with correlation_scope(arrival.correlation_id):
            labels = {"queue": self.queue.name}
            # Each turn is one try; a try held for an outage waits for the breaker and tries again, uncounted.
            while await self._admitted(message, breaker):
                started = time.perf_counter()
                try:
                    await self._run(arrival, raw)
                except Exception as error:
                    self.duration.record((time.perf_counter() - started) * 1000, labels)
                    if breaker.failed(error) is Verdict.held:
                        log.warn("message.held", {"queue": self.queue.name, "type": arrival.message_type,
                                 "message_id": arrival.message_id, "error": describe(error)})  # fmt: skip
                        continue
                    await self._settle_failure(message, arrival, raw.body, error)
                    return
                except BaseException:
                    # Cancelled (its connection lost, the service stopping): were it the trial, another may try.
                    breaker.abandoned()
                    raise
                self.duration.record((time.perf_counter() - started) * 1000, labels)
                breaker.succeeded()
                self.completed.add(1, labels)
                await self._report_retry_success(arrival)
                await message.ack()
                log.debug("message.handled", {"queue": self.queue.name, "type": arrival.message_type,
                                              "attempt": arrival.attempt})  # fmt: skip
                return

    async def _admitted(self, message: RabbitMessage, breaker: Breaker) -> bool:
        """Whether to try the delivery now (after waiting out a pause). Not when the service stops while paused:
        the delivery goes back to its queue unhandled. Not when its channel closed meanwhile: the broker has
        already given it back, and handling it would do the work twice."""
        if not await breaker.admit():
            if channel_open(message.raw_message):
                await message.nack(requeue=True)
            log.info("message.returned_while_paused", {"queue": self.queue.name})
            return False
        if not channel_open(message.raw_message):
            breaker.abandoned()
            return False
        return True

    async def _run(self, arrival: Arrival, raw: AbstractIncomingMessage) -> None:
        async with asyncio.timeout(self.handler_timeout_s):
            refuse_unidentifiable(arrival)
            decoded = decode(self.message_types, arrival.message_type, raw.body)
            delivery = Delivery(
                message_id=arrival.message_id or "",
                correlation_id=arrival.correlation_id,
                attempt=arrival.attempt,
                redelivered=bool(raw.redelivered),
                headers=arrival.carried,
            )
            await self.handlers[decoded.message_type](decoded, delivery)

    async def _settle_failure(self, message: RabbitMessage, arrival: Arrival, body: bytes, error: Exception) -> None:
        try:
            outcome = await self._fail(arrival, body, error)
        except Exception as publish_error:
            log.error("message.failure_not_recorded", publish_error, {"queue": self.queue.name})
            await message.nack(requeue=True)
            return
        self.failed.add(1, {"queue": self.queue.name, "outcome": outcome})
        await message.ack()

    async def _report_retry_success(self, arrival: Arrival) -> None:
        """A message retried from the DLQ carries its entry, retry and signature; its success resolves the entry
        once the dlq-service has checked the signature."""
        link = retry_link(arrival.carried)
        if link is None:
            return
        entry_id, retry_id, signature = link
        try:
            event = DeadLetterRetrySucceeded(
                entry_id=entry_id,
                retry_id=retry_id,
                signature=signature,
                queue=self.queue.name,
                message_id=(arrival.message_id or "")[:200],
            )
            await self.publisher.publish(event, message_id=f"retry-succeeded:{entry_id}:{retry_id}")
        except Exception as error:
            # The work is done; only the entry's automatic resolution is missing, and the log says which.
            log.error("dlq.retry_success_not_reported", error, {"entry_id": str(entry_id)})

    async def _fail(self, arrival: Arrival, body: bytes, error: Exception) -> str:
        permanent = is_permanent(error)
        carried = dict(arrival.carried)
        if arrival.raw_properties and UNDECODABLE_PROPERTIES not in carried:
            carried[UNDECODABLE_PROPERTIES] = publishable(arrival.raw_properties)
        if header_bytes(carried) > MAX_HEADER_BYTES // 2:
            # Room for ours: the publisher's own headers go (the body stays), and the record says so.
            carried = {h.HEADERS_DROPPED: f"{header_bytes(carried)} bytes of headers, too large to carry"}
        now = _now()
        attempt = arrival.attempt
        context = {
            h.ATTEMPT: attempt,
            h.FIRST_FAILURE_AT: carried.get(h.FIRST_FAILURE_AT, now),
            h.LAST_FAILURE_AT: now,
            h.ORIGINAL_EXCHANGE: carried.get(h.ORIGINAL_EXCHANGE, arrival.exchange),
            h.ORIGINAL_QUEUE: self.queue.name,
            h.ORIGINAL_ROUTING_KEY: carried.get(h.ORIGINAL_ROUTING_KEY, arrival.routing_key),
            h.ERROR_TYPE: type(error).__name__,
            h.ERROR_CLASS: "permanent" if permanent else "transient",
            h.ERROR_MESSAGE: printable(str(error))[: h.MAX_MESSAGE_CHARS],
        }
        metadata = {"queue": self.queue.name, "type": arrival.message_type, "attempt": attempt,
                    "message_id": arrival.message_id}  # fmt: skip
        properties = {"message_id": arrival.message_id, "correlation_id": arrival.correlation_id,
                      "message_type": arrival.message_type, "content_type": arrival.content_type}  # fmt: skip
        if not permanent and attempt < self.queue.max_attempts:
            await self.publisher.publish_raw(
                body,
                exchange=None,
                routing_key=self.queue.delay_queue(attempt),
                headers={**carried, **context},
                # The broker vouches for it: the next delivery believes these headers only with this user.
                user_id=self.publisher.sender,
                **properties,
            )
            log.warn("message.retry_scheduled", {**metadata, "error": context[h.ERROR_MESSAGE],
                     "delay_ms": self.queue.retry_delays_ms[attempt - 1]})  # fmt: skip
            return "retried"
        stack = printable("".join(traceback.format_exception(error)))[-h.MAX_STACK_CHARS :]
        await self.publisher.publish_raw(
            body,
            exchange=DEAD_LETTERS,
            routing_key=self.queue.name,
            headers={**carried, **context, h.REASON: "error", h.ATTEMPTS: attempt, h.SERVICE: self.service,
                     h.ERROR_STACK: stack},
            **properties,
        )  # fmt: skip
        log.error("message.dead_lettered", error, metadata)
        return "dead_lettered"


async def keep_body_raw(message: StreamMessage[Any]) -> StreamMessage[Any]:
    """What a handler on a `create_broker` broker gets (which calls it with the decoded body alone): the message
    itself, its body left raw. FastStream would parse an `application/json` body before the handler runs, and a
    malformed one would then fail outside the policy and stay unacked. The policy decodes it itself."""
    return message


def pause_on_outages(broker: RabbitBroker, outages: Outages) -> None:
    """Every policy subscribed on this broker without a breaker of its own reports to its queue's breaker in
    `outages`, which readiness and `fmhl_consumer_paused` watch."""
    _OUTAGES[broker] = outages


def subscribe(router: RabbitRouter, policy: ConsumerPolicy) -> None:
    """Register the policy as the one consumer of its work queue (declared beforehand by declare_topology).
    `no_reply`: FastStream would otherwise publish a reply to any `reply_to` a publisher names."""

    @router.subscriber(
        RabbitQueue(policy.queue.name, declare=False),
        ack_policy=AckPolicy.MANUAL,
        decoder=keep_body_raw,
        no_reply=True,
    )
    async def consume(message: RabbitMessage) -> None:
        await policy.handle(message)
