"""The `email` queue: render, send once, log. 5xx replies go to the DLQ at once; an unreachable server or database
pauses the queue (the consumer policy's breaker); other failures are retried."""

from faststream.rabbit import RabbitRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from email_worker.mailer import Unrecorded, deliver
from email_worker.metrics import EmailMetrics
from email_worker.settings import Settings
from email_worker.smtp_sessions import SmtpSessions
from email_worker.templates import render
from libs.contracts import SendEmail
from libs.db import autocommitting
from libs.logging import get_logger
from libs.messaging.consumer import ConsumerPolicy, Delivery, subscribe
from libs.messaging.publisher import Publisher
from libs.messaging.topology import EMAIL
from libs.telemetry import Telemetry

log = get_logger("email_worker")


def build_router(
    engine: AsyncEngine,
    settings: Settings,
    smtp: SmtpSessions,
    publisher: Publisher,
    telemetry: Telemetry,
    metrics: EmailMetrics,
) -> RabbitRouter:
    unrecorded = Unrecorded()
    engine = autocommitting(engine)  # each of a job's three steps is one statement

    async def on_send_email(job: SendEmail, delivery: Delivery) -> None:
        subject, body = render(job.template, job.params)
        message_id = await deliver(
            engine, smtp, unrecorded, job_id=delivery.message_id, to=job.to, template=job.template,
            subject=subject, body=body,
        )  # fmt: skip
        if message_id is None:
            metrics.skipped_duplicates.add(1, {"template": job.template})
            log.info("email.already_sent", {"job_id": delivery.message_id, "template": job.template})
            return
        metrics.sent.add(1, {"template": job.template})
        log.info("email.sent", {"job_id": delivery.message_id, "template": job.template, "message_id": message_id})

    router = RabbitRouter()
    policy = ConsumerPolicy(
        EMAIL, {SendEmail: on_send_email}, publisher, telemetry, service="email-worker",
        handler_timeout_s=settings.handler_timeout_s,
    )  # fmt: skip
    subscribe(router, policy)
    return router
