"""The `dlq` queue's consumer: aio-pika's own, on a channel of its own, each delivery straight to its handler."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustQueue
from faststream.rabbit import RabbitBroker

from libs.logging import get_logger
from libs.messaging.broker import GRACEFUL_TIMEOUT_S, robust_connection
from libs.messaging.outage import Breaker
from libs.messaging.wire import short_text

log = get_logger("dlq_service.capture_consumer")

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]
"""Settles the delivery itself: acks it once recorded, hands it back, or leaves it to the broker (channel closed)."""


class CaptureConsumer:
    """Consumes a queue with at most `prefetch` deliveries unacked, on a robust channel of its own over the
    broker's connection (its delivery tags are this consumer's alone, which `multiple` acks rely on). FastStream's
    per-delivery path (context, middlewares, call wrappers) was about a sixth of the service's CPU in capture's
    profile; the service's other queue still goes through it. After a lost connection aio-pika re-opens the
    channel with its prefetch and re-creates the consumer; the deliveries it had unacked are the broker's again.

    Stopping cancels the consumer first (nothing new arrives), releases the letters held for an outage (the
    breaker answers them False, so they are handed back), waits up to GRACEFUL_TIMEOUT_S for the letters being
    recorded to be committed and acked, and only then closes the channel."""

    def __init__(self, broker: RabbitBroker, queue: str, handle: Handler, breaker: Breaker, *, prefetch: int) -> None:
        self.broker = broker
        self.queue_name = queue
        self.handle = handle
        self.breaker = breaker
        self.prefetch = prefetch
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractRobustQueue | None = None
        self._tag: str | None = None
        self._handling = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def start(self) -> None:
        channel = await robust_connection(self.broker).channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.prefetch)
        # Passive: found, not declared (the broker's start declared it), and found again the same way on reconnect.
        queue = await channel.declare_queue(self.queue_name, passive=True)
        self._channel, self._queue = channel, queue
        self._tag = await queue.consume(self._deliver)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self._handling += 1
        self._idle.clear()
        try:
            await self.handle(message)
        except Exception as error:  # an ack on a channel closed meanwhile: the broker has the letter back
            log.error("dead_letter.not_settled", error, {"message_id": short_text(message.message_id)})
        finally:
            self._handling -= 1
            if not self._handling:
                self._idle.set()

    async def stop(self) -> None:
        channel, queue, tag = self._channel, self._queue, self._tag
        self._channel = self._queue = self._tag = None
        if channel is None or queue is None:
            return
        if tag is not None:
            try:
                await queue.cancel(tag)
            except Exception as error:  # the connection is gone: so is the consumer, and the unacked letters are back
                log.warn("dlq.consumer_not_cancelled", {"error": f"{type(error).__name__}: {error}"[:300]})
        await self.breaker.stop()
        try:
            await asyncio.wait_for(self._idle.wait(), GRACEFUL_TIMEOUT_S)
        except TimeoutError:
            log.warn("dlq.consumer_stopped_with_letters_unsettled", {"letters": self._handling})
        await channel.close()
