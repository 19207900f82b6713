"""The `email` queue, a mail per `SendEmail` or several per `SendEmails` (a distributed lead's): render, send each
once, log. 5xx replies go to the DLQ at once; an unreachable server or database pauses the queue (the consumer
policy's breaker); other failures are retried."""

from collections.abc import Mapping

from faststream.rabbit import RabbitRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from email_worker.mailer import Job, Unrecorded, deliver
from email_worker.metrics import EmailMetrics
from email_worker.settings import Settings
from email_worker.smtp_sessions import SmtpSessions
from email_worker.templates import render
from libs.contracts import SendEmail, SendEmails
from libs.db import autocommitting
from libs.logging import get_logger
from libs.messaging.consumer import ConsumerPolicy, Delivery, subscribe
from libs.messaging.publisher import Publisher
from libs.messaging.topology import EMAIL
from libs.telemetry import Telemetry

log = get_logger("email_worker")


def rendered(job_id: str, template: str, to: str, params: Mapping[str, str | int]) -> Job:
    subject, body = render(template, params)
    return Job(job_id, to, template, subject, body)


def build_router(
    engine: AsyncEngine,
    settings: Settings,
    smtp: SmtpSessions,
    publisher: Publisher,
    telemetry: Telemetry,
    metrics: EmailMetrics,
) -> RabbitRouter:
    unrecorded = Unrecorded()
    engine = autocommitting(engine)  # each step of a command is one statement

    async def send(jobs: list[Job]) -> None:
        delivered = await deliver(engine, smtp, unrecorded, jobs)
        for job in jobs:
            if job.job_id in delivered.sent:
                metrics.sent.add(1, {"template": job.template})
                log.info("email.sent", {"job_id": job.job_id, "template": job.template,
                                        "message_id": delivered.sent[job.job_id]})  # fmt: skip
            elif job.job_id in delivered.skipped:
                metrics.skipped_duplicates.add(1, {"template": job.template})
                log.info("email.already_sent", {"job_id": job.job_id, "template": job.template})
        if delivered.failure is not None:
            raise delivered.failure

    async def on_send_email(job: SendEmail, delivery: Delivery) -> None:
        # The job's id is the message's own.
        await send([rendered(delivery.message_id, job.template, job.to, job.params)])

    async def on_send_emails(command: SendEmails, delivery: Delivery) -> None:
        await send([rendered(mail.job_id, mail.template, mail.to, mail.params) for mail in command.mails])

    router = RabbitRouter()
    policy = ConsumerPolicy(
        EMAIL, {SendEmail: on_send_email, SendEmails: on_send_emails}, publisher, telemetry, service="email-worker",
        handler_timeout_s=settings.handler_timeout_s,
    )  # fmt: skip
    subscribe(router, policy)
    return router
