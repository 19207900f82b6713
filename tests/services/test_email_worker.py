"""email-worker against a real SMTP server: sent once (even when its record fails after the server accepted it),
5xx to the DLQ with the reply, an unreachable server held without spending attempts."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import ColumnElement, select, text
from sqlmodel import col

from libs.contracts import SendEmail
from libs.db.tables import EmailLog, EmailStatus
from libs.messaging import headers as h
from tests.services.conftest import REFUSED_DOMAIN, DeadLetters, Pipeline, eventually, metric_value, publisher_for

pytestmark = [pytest.mark.broker, pytest.mark.database]
DUPLICATES_SKIPPED = "fmhl_emails_duplicate_skipped_total"
RETRIED = 'fmhl_jobs_failed_total{outcome="retried"'
HELD = 'fmhl_consumer_held_total{queue="email"'
# Writes to the email log wait (reads do not) until the lock times out: a record that fails after the server
# accepted the mail.
BLOCK_EMAIL_LOG_WRITES = text("LOCK TABLE email_log IN EXCLUSIVE MODE")


def job(to: str) -> SendEmail:
    return SendEmail(template="export_ready", to=to, params={"export_id": "e-1", "row_count": 3})


async def logged(pipeline: Pipeline, where: ColumnElement[bool]) -> list[EmailStatus]:
    async with pipeline.engine.connect() as connection:
        return list((await connection.scalars(select(col(EmailLog.status)).where(where))).all())


async def email_metric(pipeline: Pipeline, line_start: str) -> float:
    return metric_value(await pipeline.metrics(pipeline.workers["email"]), line_start)


async def test_a_job_is_rendered_and_sent_once_even_when_delivered_twice(pipeline: Pipeline) -> None:
    address = f"once-{uuid.uuid4().hex[:6]}@example.com"
    skipped_before = await email_metric(pipeline, DUPLICATES_SKIPPED)
    publisher, broker = await publisher_for(pipeline.service_env["RABBITMQ_URL"])
    await publisher.publish(job(address), message_id=f"email-test:{address}")
    await publisher.publish(job(address), message_id=f"email-test:{address}")
    await broker.stop()

    async def second_delivery_skipped() -> bool:
        return await email_metric(pipeline, DUPLICATES_SKIPPED) > skipped_before

    await eventually(second_delivery_skipped)
    [mail] = pipeline.mail.to(address)
    assert mail["Subject"] == "Your export is ready"
    assert "3 rows" in str(mail.get_payload())
    assert await logged(pipeline, col(EmailLog.to_address) == address) == [EmailStatus.sent]


async def test_a_refused_address_goes_to_the_dlq_at_once_with_the_smtp_reply(
    pipeline: Pipeline, dead_letters: DeadLetters
) -> None:
    address = f"nobody-{uuid.uuid4().hex[:6]}@{REFUSED_DOMAIN}"
    publisher, broker = await publisher_for(pipeline.service_env["RABBITMQ_URL"])
    message_id = await publisher.publish(job(address))
    await broker.stop()

    dead = await dead_letters.for_message(message_id)
    headers = dead.headers or {}
    assert headers[h.ERROR_TYPE] == "SmtpRefused"
    assert str(headers[h.ERROR_MESSAGE]).startswith("550")
    assert headers[h.ATTEMPTS] == 1
    assert headers[h.ORIGINAL_QUEUE] == "email"
    assert await logged(pipeline, col(EmailLog.job_id) == message_id) == [EmailStatus.failed]
    assert not pipeline.mail.to(address)


async def test_an_smtp_outage_holds_the_job_without_spending_attempts_until_the_server_is_back(
    pipeline: Pipeline,
) -> None:
    address = f"later-{uuid.uuid4().hex[:6]}@example.com"
    held_before = await email_metric(pipeline, HELD)
    retried_before = await email_metric(pipeline, RETRIED)
    pipeline.smtp.stop()
    try:
        publisher, broker = await publisher_for(pipeline.service_env["RABBITMQ_URL"])
        await publisher.publish(job(address))
        await broker.stop()

        async def held() -> bool:
            return await email_metric(pipeline, HELD) > held_before

        await eventually(held)
        assert await logged(pipeline, col(EmailLog.to_address) == address) == []
    finally:
        pipeline.restart_smtp()

    async def delivered() -> bool:
        return bool(pipeline.mail.to(address))

    await eventually(delivered, timeout=30)
    assert len(pipeline.mail.to(address)) == 1
    assert await logged(pipeline, col(EmailLog.to_address) == address) == [EmailStatus.sent]
    assert await email_metric(pipeline, RETRIED) == retried_before


async def test_a_mail_whose_record_fails_after_the_server_accepted_it_is_recorded_not_sent_again(
    pipeline: Pipeline,
) -> None:
    address = f"record-{uuid.uuid4().hex[:6]}@example.com"
    retried_before = await email_metric(pipeline, RETRIED)
    async with pipeline.engine.connect() as blocker:
        await blocker.execute(BLOCK_EMAIL_LOG_WRITES)
        publisher, broker = await publisher_for(pipeline.service_env["RABBITMQ_URL"])
        await publisher.publish(job(address))
        await broker.stop()

        async def record_failed() -> bool:
            return await email_metric(pipeline, RETRIED) > retried_before

        await eventually(record_failed, timeout=30)
        assert len(pipeline.mail.to(address)) == 1
        await blocker.rollback()

    async def recorded() -> bool:
        return await logged(pipeline, col(EmailLog.to_address) == address) == [EmailStatus.sent]

    await eventually(recorded, timeout=30)
    assert len(pipeline.mail.to(address)) == 1
