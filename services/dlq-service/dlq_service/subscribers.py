"""Two queues. `dlq`: every dead letter, recorded in PostgreSQL before it is acked, letters arriving together in
one transaction. There is no DLQ for the DLQ: while PostgreSQL is unreachable the queue's breaker pauses capture
(held letters stay unacked and uncounted, the database is probed with backoff, one letter tries when it answers);
one PostgreSQL keeps refusing is parked in `dlq.parking` with the error, then acked. No dead letter loops and none
is acked without a row or a parked copy.
`dlq-outcomes`: a retried message was handled, so its entry resolves itself, if the dlq-service signed that retry.
"""

import asyncio
from collections import Counter as TallyCounter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitQueue, RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from opentelemetry.trace import SpanContext, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service.capture import CaptureBatcher, Captured, CaptureOutcome, DatabaseUnavailable, Refused
from dlq_service.dead_letters import DeadLetterMessage, RetryLink, read_dead_letter
from dlq_service.metrics import DlqMetrics, DlqSizePoller
from dlq_service.parking import Parking
from dlq_service.resolutions import ForgedOutcome, resolve_after_retry
from dlq_service.signing import RetrySigner
from libs.contracts import DeadLetterRetrySucceeded
from libs.db.tables import RetryOutcome
from libs.logging import correlation_scope, get_logger
from libs.messaging.consumer import ConsumerPolicy, Delivery, keep_body_raw, subscribe
from libs.messaging.errors import BusinessRuleViolation
from libs.messaging.outage import Breaker, Outages, channel_open
from libs.messaging.publisher import Publisher
from libs.messaging.topology import DLQ_OUTCOMES, DLQ_QUEUE
from libs.messaging.wire import printable, short_text
from libs.telemetry import Telemetry

log = get_logger("dlq_service")


def build_router(
    engine: AsyncEngine,
    publisher: Publisher,
    telemetry: Telemetry,
    metrics: DlqMetrics,
    sizes: DlqSizePoller,
    signer: RetrySigner,
    parking: Parking,
    outages: Outages,
    *,
    nack_backoff_s: float,
    handler_timeout_s: float,
    capture_attempts: int,
    capture_batch: int,
    probe_timeout_s: float,
) -> RabbitRouter:
    router = RabbitRouter()

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

    async def hand_back(message: RabbitMessage) -> None:
        await asyncio.sleep(nack_backoff_s)
        await message.nack(requeue=True)

    @router.subscriber(
        RabbitQueue(DLQ_QUEUE, declare=False), ack_policy=AckPolicy.MANUAL, decoder=keep_body_raw, no_reply=True
    )
    async def on_dead_letter(message: RabbitMessage) -> None:
        raw = message.raw_message
        with correlation_scope(short_text(raw.correlation_id)):
            try:
                letter = read_dead_letter(
                    raw.headers or {}, raw.body, message_id=raw.message_id, correlation_id=raw.correlation_id,
                    message_type=raw.type, content_type=raw.content_type, now=datetime.now(UTC),
                )  # fmt: skip
                origin = arrived_in(raw.headers) if traced else None
                recorded = await recorded_while_available(breaker, batcher, letter, origin, message)
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
                    await hand_back(message)
                    return
                await message.ack()
                metrics.parked.add(1, {"queue": queue})
                parked = {"message_id": short_text(raw.message_id), "queue": queue, "error": outcome.error,
                          "attempts": outcome.attempts}  # fmt: skip
                log.error("dead_letter.parked", None, parked)
                return
            await message.ack()
        if outcome.link_refused:
            log.warn("dead_letter.retry_link_refused", {"entry_id": str(outcome.entry_id), "queue": letter.queue})

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
    message: RabbitMessage,
) -> Captured | Refused | None:
    """The letter's outcome once recorded; while PostgreSQL is down it waits, unacked, for the breaker to let it
    try again. None: it was not handled (the service is stopping, or its channel closed and the broker has it
    back), and is nacked here if it still can be."""
    while await breaker.admit():
        if not channel_open(message.raw_message):
            breaker.abandoned()
            return None
        try:
            outcome = await batcher.record(letter, origin)
        except DatabaseUnavailable as error:
            breaker.failed(error, unavailable=True)
            continue
        breaker.succeeded()
        return outcome
    if channel_open(message.raw_message):
        await message.nack(requeue=True)
    return None
