"""Two queues. `dlq`: every dead letter, recorded in PostgreSQL before it is acked; there is no DLQ for the
DLQ, so a dead letter that cannot be recorded (database down) is handed back after a pause, never rejected.
`dlq-outcomes`: a retried message was handled, so its entry resolves itself."""

import asyncio
from datetime import UTC, datetime

from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitQueue, RabbitRouter
from faststream.rabbit.annotations import RabbitMessage
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service.capture import CaptureOutcome, capture
from dlq_service.dead_letters import read_dead_letter
from dlq_service.metrics import DlqMetrics, DlqSizePoller
from dlq_service.resolutions import resolve_after_retry
from libs.contracts import DeadLetterRetrySucceeded
from libs.db.tables import RetryOutcome
from libs.logging import correlation_scope, get_logger
from libs.messaging.consumer import ConsumerPolicy, Delivery, keep_body_raw, subscribe
from libs.messaging.publisher import Publisher
from libs.messaging.topology import DLQ_OUTCOMES, DLQ_QUEUE
from libs.telemetry import Telemetry

log = get_logger("dlq_service")


def build_router(
    engine: AsyncEngine,
    publisher: Publisher,
    telemetry: Telemetry,
    metrics: DlqMetrics,
    sizes: DlqSizePoller,
    *,
    nack_backoff_s: float,
    handler_timeout_s: float,
) -> RabbitRouter:
    router = RabbitRouter()

    @router.subscriber(RabbitQueue(DLQ_QUEUE, declare=False), ack_policy=AckPolicy.MANUAL, decoder=keep_body_raw)
    async def on_dead_letter(message: RabbitMessage) -> None:
        raw = message.raw_message
        with correlation_scope(raw.correlation_id):
            try:
                letter = read_dead_letter(
                    raw.headers or {}, raw.body, message_id=raw.message_id, correlation_id=raw.correlation_id,
                    message_type=raw.type, content_type=raw.content_type, now=datetime.now(UTC),
                )  # fmt: skip
                captured = await capture(engine, letter)
            except Exception as error:
                log.error("dead_letter.not_recorded", error, {"message_id": raw.message_id})
                await asyncio.sleep(nack_backoff_s)
                await message.nack(requeue=True)
                return
            await message.ack()
        if captured.outcome != CaptureOutcome.duplicate:
            metrics.received.add(1, {"queue": letter.queue, "reason": letter.reason.value})
            if captured.outcome == CaptureOutcome.failed_again:
                metrics.retry_outcomes.add(1, {"queue": letter.queue, "outcome": RetryOutcome.failed_again.value})
            await sizes.refresh()
        # Logs carry no payload: contact details stay in the database.
        log.warn(
            "dead_letter.received",
            {"entry_id": str(captured.entry_id), "outcome": captured.outcome.value, "queue": letter.queue,
             "reason": letter.reason.value, "error_type": letter.error_type, "error_message": letter.error_message,
             "attempts": letter.attempts, "service": letter.service, "message_id": letter.message_id,
             "type": letter.message_type},
        )  # fmt: skip

    async def on_dead_letter_retry_succeeded(event: DeadLetterRetrySucceeded, delivery: Delivery) -> None:
        if await resolve_after_retry(engine, event.entry_id):
            metrics.retry_outcomes.add(1, {"queue": event.queue, "outcome": RetryOutcome.succeeded.value})
            await sizes.refresh()
            log.info("dead_letter.resolved_by_retry", {"entry_id": str(event.entry_id), "queue": event.queue})

    subscribe(
        router,
        ConsumerPolicy(
            DLQ_OUTCOMES, {DeadLetterRetrySucceeded: on_dead_letter_retry_succeeded}, publisher, telemetry,
            service="dlq-service", handler_timeout_s=handler_timeout_s,
        ),
    )  # fmt: skip
    return router
