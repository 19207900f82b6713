"""Two queues. `dlq` (aio-pika's own consumer, `CaptureConsumer`): every dead letter, recorded in PostgreSQL
before it is acked, letters arriving together in one transaction, then counted, logged and acked together (one
line, one `multiple` ack). There is no DLQ for the DLQ: while PostgreSQL is unreachable the queue's breaker pauses
capture (held letters stay unacked and uncounted, the database is probed with backoff, one letter tries when it
answers); one PostgreSQL keeps refusing is parked in `dlq.parking` with the error, then acked. No dead letter loops
and none is acked without a row or a parked copy. `dlq-outcomes` (through FastStream): a retried message was
handled, so its entry resolves itself, if the dlq-service signed that retry.
"""

import asyncio
import weakref
from collections import Counter as TallyCounter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiormq
from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit import RabbitBroker, RabbitRouter
from opentelemetry.trace import SpanContext, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service.capture import CaptureBatcher, Captured, CaptureOutcome, DatabaseUnavailable, Refused
from dlq_service.capture_consumer import CaptureConsumer
from dlq_service.dead_letters import DeadLetterMessage, RetryLink, read_dead_letter
from dlq_service.metrics import DlqMetrics, DlqSizePoller
from dlq_service.parking import Parking
from dlq_service.resolutions import ForgedOutcome, resolve_after_retry
from dlq_service.signing import RetrySigner
from libs.contracts import DeadLetterRetrySucceeded
from libs.db.tables import RetryOutcome
from libs.logging import correlation_scope, get_logger
from libs.messaging.consumer import ConsumerPolicy, Delivery, subscribe
from libs.messaging.errors import BusinessRuleViolation
from libs.messaging.outage import Breaker, Outages, channel_open
from libs.messaging.publisher import Publisher
from libs.messaging.topology import DLQ_OUTCOMES, DLQ_QUEUE
from libs.messaging.wire import printable, short_text
from libs.telemetry import Telemetry

log = get_logger("dlq_service")


def build_capture(
    broker: RabbitBroker,
    engine: AsyncEngine,
    telemetry: Telemetry,
    metrics: DlqMetrics,
    sizes: DlqSizePoller,
    signer: RetrySigner,
    parking: Parking,
    outages: Outages,
    *,
    prefetch: int,
    nack_backoff_s: float,
    capture_attempts: int,
    capture_batch: int,
    probe_timeout_s: float,
) -> CaptureConsumer:
    """The `dlq` queue's consumer (aio-pika's own, `CaptureConsumer`) with its handler, `on_dead_letter`."""

    def recorded(captured: Sequence[tuple[DeadLetterMessage, Captured]]) -> None:
        """A committed batch: its counts added once per label set, the DLQ size asked for once, one log line."""
        received: TallyCounter[tuple[str, str]] = TallyCounter()
        failed_again: TallyCounter[str] = TallyCounter()
        for letter, outcome in captured:
            if outcome.outcome is not CaptureOutcome.duplicate:
                received[letter.queue, letter.reason.value] += 1
            if outcome.outcome is CaptureOutcome.failed_again:
                failed_again[letter.queue] += 1
        for (queue, reason), count in received.items():
            metrics.received.add(count, {"queue": queue, "reason": reason})
        for queue, count in failed_again.items():
            metrics.retry_outcomes.add(count, {"queue": queue, "outcome": RetryOutcome.failed_again.value})
        if received:
            sizes.refresh_soon()
        log.warn("dead_letters.received", received_line(captured))

    batcher = CaptureBatcher(
        engine, signer, max_batch=capture_batch, attempts=capture_attempts, probe_timeout_s=probe_timeout_s,
        tracer=telemetry.tracer, recorded=recorded,
    )  # fmt: skip
    breaker = outages.breaker(DLQ_QUEUE)
    traced = telemetry.traces_enabled
    acks = Acks()

    async def hand_back(raw: AbstractIncomingMessage) -> None:
        await asyncio.sleep(nack_backoff_s)
        await acks.hand_back(raw)

    async def on_dead_letter(raw: AbstractIncomingMessage) -> None:
        with correlation_scope(short_text(raw.correlation_id)):
            try:
                letter = read_dead_letter(
                    raw.headers or {}, raw.body, message_id=raw.message_id, correlation_id=raw.correlation_id,
                    message_type=raw.type, content_type=raw.content_type, now=datetime.now(UTC),
                )  # fmt: skip
                origin = arrived_in(raw.headers) if traced else None
                recorded = await recorded_while_available(breaker, batcher, letter, origin, raw, acks)
            except Exception as error:  # reading is total; should it still fail, the letter is parked, not lost
                outcome: Captured | Refused = Refused(printable(f"{type(error).__name__}: {error}")[:2_000], 0)
                queue = "unknown"
            else:
                if recorded is None:
                    return
                outcome, queue = recorded, letter.queue
            if isinstance(outcome, Refused):
                try:
                    await parking.park(raw, outcome.error, outcome.attempts)
                except Exception as error:
                    log.error("dead_letter.not_parked", error, {"message_id": short_text(raw.message_id)})
                    await hand_back(raw)
                    return
                await acks.ack(raw)
                metrics.parked.add(1, {"queue": queue})
                parked = {"message_id": short_text(raw.message_id), "queue": queue, "error": outcome.error,
                          "attempts": outcome.attempts}  # fmt: skip
                log.error("dead_letter.parked", None, parked)
                return
            await acks.ack(raw)
        if outcome.link_refused:
            log.warn("dead_letter.retry_link_refused", {"entry_id": str(outcome.entry_id), "queue": letter.queue})

    return CaptureConsumer(broker, DLQ_QUEUE, on_dead_letter, breaker, prefetch=prefetch)


def build_router(
    engine: AsyncEngine,
    publisher: Publisher,
    telemetry: Telemetry,
    metrics: DlqMetrics,
    sizes: DlqSizePoller,
    signer: RetrySigner,
    *,
    handler_timeout_s: float,
) -> RabbitRouter:
    """The queues consumed through FastStream: `dlq-outcomes`."""
    router = RabbitRouter()

    async def on_dead_letter_retry_succeeded(event: DeadLetterRetrySucceeded, delivery: Delivery) -> None:
        link = RetryLink(event.entry_id, event.retry_id, event.signature)
        try:
            resolved = await resolve_after_retry(engine, signer, link)
        except ForgedOutcome as error:
            # Kept as a dead letter of its own, for whoever wants to know who sends such reports.
            raise BusinessRuleViolation(str(error)) from None
        if resolved:
            metrics.retry_outcomes.add(1, {"queue": event.queue, "outcome": RetryOutcome.succeeded.value})
            sizes.refresh_soon()
            log.info("dead_letter.resolved_by_retry", {"entry_id": str(event.entry_id), "queue": event.queue})

    subscribe(
        router,
        ConsumerPolicy(
            DLQ_OUTCOMES, {DeadLetterRetrySucceeded: on_dead_letter_retry_succeeded}, publisher, telemetry,
            service="dlq-service", handler_timeout_s=handler_timeout_s,
        ),
    )  # fmt: skip
    return router


def received_line(captured: Sequence[tuple[DeadLetterMessage, Captured]]) -> dict[str, Any]:
    """`dead_letters.received`, one line per batch: each letter's entry and what identifies it (its correlation
    id among them, so a request's dead letters are still found in the logs). No payload and no error text:
    contact details stay in the database (and the logger masks what is left)."""
    return {
        "letters": len(captured),
        "entries": [
            {"entry_id": None if outcome.entry_id is None else str(outcome.entry_id), "outcome": outcome.outcome.value,
             "queue": letter.queue, "reason": letter.reason.value, "error_type": letter.error_type,
             "message_id": letter.message_id, "correlation_id": letter.correlation_id}
            for letter, outcome in captured
        ],
    }  # fmt: skip


MAX_ACKED_ALONE = 10_000
"""Tags acked one by one above a delivery left unsettled that a channel remembers before it stops coalescing."""


class SettledTags:
    """One channel's deliveries as this consumer settled them (delivery tags count up from 1 on each channel)."""

    def __init__(self) -> None:
        self.floor: int | None = 1
        """Every delivery tag below it is settled; None once acks on this channel go one by one."""
        self.alone: set[int] = set()
        """Tags at or above the floor already acked or handed back one by one."""
        self.waiting: dict[int, asyncio.Future[None]] = {}
        """Tags to ack, each with the handler waiting for its ack to be sent."""
        self.sending = asyncio.Lock()
        """Acks go out in the order they were decided: a lone ack is never sent after a `multiple` one covered it."""

    def acks(self, waiting: Mapping[int, object]) -> list[tuple[int, bool]]:
        """(tag, multiple) to send for the `waiting` tags: the run of settled tags from the floor up, acked at
        once, then every waiting tag past a delivery still unsettled, alone."""
        highest = 0
        if self.floor is not None:
            tag = self.floor
            while tag in waiting or tag in self.alone:
                self.alone.discard(tag)
                highest = tag if tag in waiting else highest
                tag += 1
            self.floor = tag
        covered = sum(1 for tag in waiting if tag <= highest)
        sends = [(highest, covered > 1)] if covered else []
        for tag in sorted(waiting):
            if tag > highest:
                sends.append((tag, False))
                self.settled_alone(tag)
        return sends

    def settled_alone(self, tag: int) -> None:
        if self.floor is None:
            return
        self.alone.add(tag)
        if len(self.alone) > MAX_ACKED_ALONE:
            # A delivery this consumer never settles (its handler failed) would keep the floor where it is.
            self.floor, self.alone = None, set()


class Acks:
    """The acks of the dead letters this process recorded, coalesced: the letters whose handlers ask in the same
    turn of the event loop (a committed batch's) are acked together, with one `multiple` ack up to the highest
    tag below which every delivery on the channel is settled, and each other one alone. A delivery still held or
    in a batch being written stops the run, so a `multiple` ack never covers it; the consumer has a channel of
    its own (`CaptureConsumer`), so no other consumer's delivery is ever in the run."""

    def __init__(self) -> None:
        self._channels: weakref.WeakKeyDictionary[aiormq.abc.AbstractChannel, SettledTags] = weakref.WeakKeyDictionary()

    def _of(self, raw: AbstractIncomingMessage) -> tuple[aiormq.abc.AbstractChannel, SettledTags]:
        channel = raw.channel
        settled = self._channels.get(channel)
        if settled is None:
            settled = self._channels[channel] = SettledTags()
        return channel, settled

    async def ack(self, raw: AbstractIncomingMessage) -> None:
        """Returns once the ack is written (or raises as a lone ack would, the channel closed meanwhile)."""
        if raw.delivery_tag is None:
            await raw.ack()
            return
        channel, settled = self._of(raw)
        loop = asyncio.get_running_loop()
        if not settled.waiting:
            loop.call_soon(self._send, channel, settled)
        sent = settled.waiting[raw.delivery_tag] = loop.create_future()
        await sent

    async def hand_back(self, raw: AbstractIncomingMessage) -> None:
        """Back to the queue, for another try later."""
        await raw.nack(requeue=True)
        if raw.delivery_tag is not None:
            self._of(raw)[1].settled_alone(raw.delivery_tag)

    def _send(self, channel: aiormq.abc.AbstractChannel, settled: SettledTags) -> None:
        waiting, settled.waiting = settled.waiting, {}
        task = asyncio.create_task(_write_acks(channel, settled, settled.acks(waiting), waiting), name="dlq-acks")
        _ACKS_IN_FLIGHT.add(task)
        task.add_done_callback(_ACKS_IN_FLIGHT.discard)


_ACKS_IN_FLIGHT: set[asyncio.Task[None]] = set()


async def _write_acks(
    channel: aiormq.abc.AbstractChannel,
    settled: SettledTags,
    sends: Sequence[tuple[int, bool]],
    waiting: Mapping[int, asyncio.Future[None]],
) -> None:
    try:
        async with settled.sending:
            for tag, multiple in sends:
                await channel.basic_ack(tag, multiple=multiple)
    except Exception as error:  # each handler raises it, as its own ack would have
        for sent in waiting.values():
            if not sent.done():
                sent.set_exception(error)
        return
    for sent in waiting.values():
        if not sent.done():
            sent.set_result(None)


_TRACE_CONTEXT = TraceContextTextMapPropagator()


def arrived_in(headers: Mapping[str, Any] | None) -> SpanContext | None:
    """The trace a letter arrived in (its W3C `traceparent`, carried through dead-lettering), for its batch's span
    to link to; None when it names none or a malformed one."""
    traceparent = (headers or {}).get("traceparent")
    if not isinstance(traceparent, str):
        return None
    context = get_current_span(_TRACE_CONTEXT.extract({"traceparent": traceparent})).get_span_context()
    return context if context.is_valid else None


async def recorded_while_available(
    breaker: Breaker,
    batcher: CaptureBatcher,
    letter: DeadLetterMessage,
    origin: SpanContext | None,
    raw: AbstractIncomingMessage,
    acks: Acks,
) -> Captured | Refused | None:
    """The letter's outcome once recorded; while PostgreSQL is down it waits, unacked, for the breaker to let it
    try again. None: it was not handled (the service is stopping, or its channel closed and the broker has it
    back), and is nacked here if it still can be."""
    while await breaker.admit():
        if not channel_open(raw):
            breaker.abandoned()
            return None
        try:
            outcome = await batcher.record(letter, origin)
        except DatabaseUnavailable as error:
            breaker.failed(error, unavailable=True)
            continue
        breaker.succeeded()
        return outcome
    if channel_open(raw):
        await acks.hand_back(raw)
    return None
