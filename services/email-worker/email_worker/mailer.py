"""Sending through SMTP, each job at most once: the email log remembers what the server accepted."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from email_worker.settings import Settings
from libs.db.tables import EmailLog, EmailStatus
from libs.messaging.errors import PermanentError, TransientError

# Two deliveries of one job (a redelivery racing a slow first attempt) queue here, one at a time.
LOCK_JOB = select(func.pg_advisory_xact_lock(func.hashtext(bindparam("job_id"))))

ALREADY_SENT = select(col(EmailLog.id)).where(
    col(EmailLog.job_id) == bindparam("job_id"), col(EmailLog.status) == EmailStatus.sent
)

_LOG = insert(EmailLog).values(
    job_id=bindparam("job_id"),
    smtp_message_id=bindparam("smtp_message_id"),
    to_address=bindparam("to_address"),
    template=bindparam("template"),
    status=bindparam("status"),
    smtp_response=bindparam("smtp_response"),
)
LOG_SENT = _LOG.on_conflict_do_update(
    index_elements=[col(EmailLog.job_id)],
    set_={
        "status": _LOG.excluded.status,
        "smtp_message_id": _LOG.excluded.smtp_message_id,
        "smtp_response": _LOG.excluded.smtp_response,
    },
)
LOG_FAILED = _LOG.on_conflict_do_update(
    index_elements=[col(EmailLog.job_id)],
    set_={"status": _LOG.excluded.status, "smtp_response": _LOG.excluded.smtp_response},
)


class SmtpRefused(PermanentError):
    """The server answered 5xx (or the address is invalid): the reply is the error message."""


class SmtpUnavailable(TransientError):
    """Connection refused, timeout, or a 4xx reply: worth retrying."""


def _classify(error: Exception) -> Exception:
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        replies = [f"{r.code} {r.message}" for r in error.recipients]
        codes = [r.code for r in error.recipients]
        reply = "; ".join(replies)
        return SmtpRefused(reply) if all(code >= 500 for code in codes) else SmtpUnavailable(reply)
    if isinstance(error, aiosmtplib.SMTPResponseException):
        reply = f"{error.code} {error.message}"
        return SmtpRefused(reply) if error.code >= 500 else SmtpUnavailable(reply)
    return SmtpUnavailable(f"{type(error).__name__}: {error}")


async def deliver(
    engine: AsyncEngine, settings: Settings, *, job_id: str, to: str, template: str, subject: str, body: str
) -> str | None:
    """Sends unless this job was already accepted; returns the Message-ID sent, or None when skipped."""
    async with engine.begin() as connection:
        await connection.execute(LOCK_JOB, {"job_id": job_id})
        if await connection.scalar(ALREADY_SENT, {"job_id": job_id}) is not None:
            return None
        message = EmailMessage()
        message["From"] = settings.smtp_from
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain="fmhl.local")
        message["X-Fmhl-Job"] = job_id
        message.set_content(body)
        try:
            response = await aiosmtplib.send(
                message,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                start_tls=settings.smtp_starttls,
                timeout=settings.smtp_timeout_s,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            failure = _classify(error)
            if isinstance(failure, SmtpRefused):
                await _log_failure(engine, job_id, to, template, str(failure))
            raise failure from error
        await connection.execute(
            LOG_SENT,
            {"job_id": job_id, "smtp_message_id": message["Message-ID"], "to_address": to, "template": template,
             "status": EmailStatus.sent, "smtp_response": str(response[1])[:1000]},
        )  # fmt: skip
    return str(message["Message-ID"])


async def _log_failure(engine: AsyncEngine, job_id: str, to: str, template: str, response: str) -> None:
    """In its own transaction: the caller's rolls back with the error it raises."""
    async with engine.begin() as connection:
        await connection.execute(
            LOG_FAILED,
            {"job_id": job_id, "smtp_message_id": None, "to_address": to, "template": template,
             "status": EmailStatus.failed, "smtp_response": response[:1000]},
        )  # fmt: skip
