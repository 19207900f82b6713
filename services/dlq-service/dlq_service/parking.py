"""`dlq.parking`: dead letters PostgreSQL kept refusing, each with the error, kept by the broker instead of looping.

Parking is the capture path's last resort, never its answer to an outage. The admin API shows what is parked
(a snapshot: the messages are taken and handed straight back) and, once the cause is fixed, sends them back to
`dlq` to be captured again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any

from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker, RabbitQueue
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from dlq_service.dead_letters import json_safe, mask_text, preview
from libs import audit
from libs.logging import get_logger
from libs.messaging import headers as h
from libs.messaging.broker import queue_counts
from libs.messaging.consumer import publishable
from libs.messaging.publisher import Publisher, PublishFailed
from libs.messaging.topology import DLQ_QUEUE, PARKING_QUEUE
from libs.messaging.wire import printable, short_text
from libs.web.limits import JsonInt

log = get_logger("dlq_service.parking")
PREVIEW_CHARS = 300
_PARKING_HEADERS = frozenset({h.PARKED_ERROR, h.PARKED_AT, h.PARKED_ATTEMPTS})


class ParkedMessage(SQLModel):
    """One parked dead letter, masked like a list row."""

    message_id: str | None
    queue: str | None
    error: str | None
    parked_at: str | None
    attempts: int | None
    body_bytes: int
    payload_preview: str | None


class ParkedMessages(SQLModel):
    depth: int
    items: list[ParkedMessage]


class Recapture(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: Annotated[JsonInt, Field(ge=1, le=10_000)] = 100


class Recaptured(SQLModel):
    sent_back: int
    still_parked: int


async def audit_recapture(engine: AsyncEngine, actor: str, recaptured: Recaptured) -> None:
    async with engine.begin() as connection:
        await audit.record(
            connection, actor=actor, action="dlq.parked_recaptured", entity_type="queue", entity_id=PARKING_QUEUE,
            metadata={"sent_back": recaptured.sent_back, "still_parked": recaptured.still_parked},
        )  # fmt: skip


def _header_text(headers: Mapping[str, Any], name: str) -> str | None:
    value = json_safe(headers.get(name))
    return None if value is None else str(value)


def parked_view(message: AbstractIncomingMessage) -> ParkedMessage:
    headers = message.headers or {}
    attempts = headers.get(h.PARKED_ATTEMPTS)
    queue = _header_text(headers, h.ORIGINAL_QUEUE) or _header_text(headers, "x-first-death-queue")
    return ParkedMessage(
        message_id=mask_text(printable(message.message_id)) if message.message_id else None,
        queue=queue,
        error=mask_text(_header_text(headers, h.PARKED_ERROR) or "") or None,
        parked_at=_header_text(headers, h.PARKED_AT),
        attempts=attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else None,
        body_bytes=len(message.body),
        payload_preview=preview(
            message.body[: PREVIEW_CHARS * 4].decode("utf-8", "replace"),
            fetched_whole=len(message.body) <= PREVIEW_CHARS * 4,
            length=PREVIEW_CHARS,
        ),
    )


class Parking:
    def __init__(self, broker: RabbitBroker, publisher: Publisher) -> None:
        self.broker = broker
        self.publisher = publisher

    async def park(self, message: AbstractIncomingMessage, error: str, attempts: int) -> None:
        """A confirmed copy in `dlq.parking`, with its own headers and why it could not be recorded. Raises
        PublishFailed only when even the copy without the original headers is refused (a broker problem)."""
        parked = {
            h.PARKED_ERROR: printable(error)[: h.MAX_MESSAGE_CHARS],
            h.PARKED_AT: dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            h.PARKED_ATTEMPTS: attempts,
        }
        original = publishable(dict(message.headers or {}))
        try:
            await self._send(message, PARKING_QUEUE, {**original, **parked})
        except PublishFailed as failure:
            # Headers the broker would not take back (too large for a frame, a type it refuses): the body and
            # the error still go, and the log says what was dropped.
            log.warn("dead_letter.parked_without_headers", {"message_id": short_text(message.message_id),
                                                            "error": str(failure)[:500]})  # fmt: skip
            await self._send(message, PARKING_QUEUE, parked)

    async def _send(self, message: AbstractIncomingMessage, queue: str, headers: Mapping[str, Any]) -> None:
        await self.publisher.publish_raw(
            message.body,
            exchange=None,
            routing_key=queue,
            message_id=short_text(message.message_id),
            correlation_id=short_text(message.correlation_id),
            message_type=short_text(message.type),
            content_type=short_text(message.content_type),
            headers=headers,
        )

    async def _queue(self) -> Any:
        return await self.broker.declare_queue(RabbitQueue(PARKING_QUEUE, declare=False))

    async def peek(self, limit: int) -> ParkedMessages:
        """Up to `limit` parked messages, handed back at once: a concurrent look may see others."""
        queue = await self._queue()
        # Counted first: messages taken for a look are unacked until the broker has them back.
        depth, _ = await queue_counts(self.broker, PARKING_QUEUE)
        taken: list[AbstractIncomingMessage] = []
        try:
            while len(taken) < limit and (message := await queue.get(no_ack=False, fail=False)) is not None:
                taken.append(message)
            items = [parked_view(message) for message in taken]
        finally:
            for message in taken:
                await message.nack(requeue=True)
        return ParkedMessages(depth=depth, items=items)

    async def recapture(self, limit: int) -> Recaptured:
        """Sends up to `limit` parked messages back to `dlq` (confirmed, then acked), without the parking headers:
        once the cause is fixed they are recorded; if not, they are parked again."""
        queue = await self._queue()
        sent = 0
        while sent < limit and (message := await queue.get(no_ack=False, fail=False)) is not None:
            headers = {key: value for key, value in (message.headers or {}).items() if key not in _PARKING_HEADERS}
            try:
                await self._send(message, DLQ_QUEUE, publishable(headers))
            except PublishFailed:
                await message.nack(requeue=True)
                raise
            await message.ack()
            sent += 1
        depth, _ = await queue_counts(self.broker, PARKING_QUEUE)
        return Recaptured(sent_back=sent, still_parked=depth)
