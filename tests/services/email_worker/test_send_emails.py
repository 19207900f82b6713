"""email-worker handling `SendEmails`, several mails in one command, against a real SMTP server and broker: each
mail sent once by its job id, whichever shape asked for it; a refused mail does not stop the others and takes
the command to the DLQ with its reply."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select
from sqlmodel import col

from libs.contracts import Mail, SendEmail, SendEmails
from libs.db.tables import EmailLog, EmailStatus
from libs.messaging import headers as h
from tests.services.conftest import REFUSED_DOMAIN, DeadLetters, Pipeline, eventually, publisher_for

pytestmark = [pytest.mark.broker, pytest.mark.database]


def mail(job_id: str, to: str) -> Mail:
    return Mail(job_id=job_id, template="new_lead", to=to, params={"lead_id": "lead-1", "price_cents": 250})


async def statuses(pipeline: Pipeline, job_ids: list[str]) -> dict[str, EmailStatus]:
    async with pipeline.engine.connect() as connection:
        rows = await connection.execute(
            select(col(EmailLog.job_id), col(EmailLog.status)).where(col(EmailLog.job_id).in_(job_ids))
        )
        return {row.job_id: row.status for row in rows}


async def test_each_mail_of_a_command_is_sent_once_and_one_sent_before_as_a_single_job_is_not_sent_again(
    pipeline: Pipeline,
) -> None:
    run = uuid.uuid4().hex[:8]
    first, second, third = (f"batch-{n}-{run}@example.com" for n in range(3))
    jobs = [f"email-test:batch:{run}:{n}" for n in range(3)]
    publisher, broker = await publisher_for(pipeline.service_env["RABBITMQ_URL"])
    await publisher.publish(SendEmail(template="new_lead", to=first, params={}), message_id=jobs[0])

    async def single_sent() -> bool:
        return bool(pipeline.mail.to(first))

    await eventually(single_sent)
    command = SendEmails(mails=[mail(jobs[0], first), mail(jobs[1], second), mail(jobs[2], third)])
    await publisher.publish(command, message_id=f"emails:{run}")
    await publisher.publish(command, message_id=f"emails:{run}")
    await broker.stop()

    async def all_recorded() -> bool:
        return await statuses(pipeline, jobs) == dict.fromkeys(jobs, EmailStatus.sent)

    await eventually(all_recorded)
    assert [len(pipeline.mail.to(address)) for address in (first, second, third)] == [1, 1, 1]
    [mail_to_second] = pipeline.mail.to(second)
    assert mail_to_second["X-Fmhl-Job"] == jobs[1]
    assert "$2.50" in str(mail_to_second.get_payload())


async def test_a_refused_mail_does_not_stop_the_others_and_takes_the_command_to_the_dlq_with_its_reply(
    pipeline: Pipeline, dead_letters: DeadLetters
) -> None:
    run = uuid.uuid4().hex[:8]
    refused, accepted = f"nobody-{run}@{REFUSED_DOMAIN}", f"somebody-{run}@example.com"
    jobs = [f"email-test:refused:{run}:0", f"email-test:refused:{run}:1"]
    publisher, broker = await publisher_for(pipeline.service_env["RABBITMQ_URL"])
    message_id = await publisher.publish(SendEmails(mails=[mail(jobs[0], refused), mail(jobs[1], accepted)]))
    await broker.stop()

    dead = await dead_letters.for_message(message_id)
    headers = dead.headers or {}
    assert headers[h.ERROR_TYPE] == "SmtpRefused"
    assert str(headers[h.ERROR_MESSAGE]).startswith(f"{jobs[0]}: 550")
    assert headers[h.ATTEMPTS] == 1
    assert await statuses(pipeline, jobs) == {jobs[0]: EmailStatus.failed, jobs[1]: EmailStatus.sent}
    assert not pipeline.mail.to(refused)
    assert len(pipeline.mail.to(accepted)) == 1
