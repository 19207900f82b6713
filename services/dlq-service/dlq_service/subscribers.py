"""The `dlq` queue. There is no DLQ for the DLQ: a dead letter is acked once handled, never rejected.

The foundation stage logs each dead letter with its failure context; persistence builds on this handler.
"""

import asyncio

from faststream.middlewares import AckPolicy
from faststream.rabbit import RabbitQueue, RabbitRouter
from faststream.rabbit.annotations import RabbitMessage

from dlq_service.dead_letters import read_failure
from dlq_service.metrics import DlqMetrics
from libs.logging import correlation_scope, get_logger
from libs.messaging.consumer import keep_body_raw
from libs.messaging.topology import DLQ_QUEUE

log = get_logger("dlq_service")


def build_router(metrics: DlqMetrics, *, nack_backoff_s: float) -> RabbitRouter:
    router = RabbitRouter()

    @router.subscriber(RabbitQueue(DLQ_QUEUE, declare=False), ack_policy=AckPolicy.MANUAL, decoder=keep_body_raw)
    async def on_dead_letter(message: RabbitMessage) -> None:
        raw = message.raw_message
        with correlation_scope(raw.correlation_id):
            try:
                failure = read_failure(raw.headers or {})
                metrics.received.add(1, {"queue": failure.queue, "reason": failure.reason})
                log.warn(
                    "dead_letter.received",
                    {
                        "queue": failure.queue,
                        "reason": failure.reason,
                        "error_type": failure.error_type,
                        "error_message": failure.error_message,
                        "attempts": failure.attempts,
                        "service": failure.service,
                        "message_id": raw.message_id,
                        "type": raw.type,
                    },
                )
            except Exception as error:
                log.error("dead_letter.not_recorded", error, {"message_id": raw.message_id})
                await asyncio.sleep(nack_backoff_s)
                await message.nack(requeue=True)
                return
            await message.ack()

    return router
