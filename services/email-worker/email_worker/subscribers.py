"""The `email` queue: one router, one handler per message type.

The foundation stage validates each job against its contract, logs it and acks; the real work builds on
these handlers.
"""

from faststream.rabbit import RabbitRouter

from email_worker.metrics import EmailMetrics
from libs.contracts import SendEmail
from libs.logging import get_logger
from libs.messaging.consumer import ConsumerPolicy, Delivery, subscribe
from libs.messaging.publisher import Publisher
from libs.messaging.topology import EMAIL
from libs.telemetry import Telemetry

log = get_logger("email_worker")


def build_router(
    publisher: Publisher, telemetry: Telemetry, metrics: EmailMetrics, *, handler_timeout_s: float
) -> RabbitRouter:
    async def on_send_email(job: SendEmail, delivery: Delivery) -> None:
        metrics.received.add(1, {"type": job.message_type})
        log.info("email_job.received", {"template": job.template, "attempt": delivery.attempt})

    router = RabbitRouter()
    policy = ConsumerPolicy(
        EMAIL,
        {SendEmail: on_send_email},
        publisher,
        telemetry,
        service="email-worker",
        handler_timeout_s=handler_timeout_s,
    )
    subscribe(router, policy)
    return router
