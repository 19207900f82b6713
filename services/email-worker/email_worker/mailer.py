"""Sending through SMTP, each job at most once: the email log remembers what the server accepted."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from email_worker.settings import Settings
from libs.messaging.errors import PermanentError, TransientError


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
        # Two deliveries of one job (a redelivery racing a slow first attempt) queue here, one at a time.
        await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:job))"), {"job": job_id})
        sent = await connection.scalar(
            text("SELECT 1 FROM email_log WHERE job_id = :job AND status = 'sent'"), {"job": job_id}
        )
        if sent is not None:
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
                await _log(engine, job_id, to, template, "failed", None, str(failure))
            raise failure from error
        await connection.execute(
            text(
                "INSERT INTO email_log (job_id, smtp_message_id, to_address, template, status, smtp_response) "
                "VALUES (:job, :mid, :to, :template, 'sent', :response) "
                "ON CONFLICT (job_id) DO UPDATE SET status = 'sent', smtp_message_id = EXCLUDED.smtp_message_id, "
                "smtp_response = EXCLUDED.smtp_response"
            ),
            {"job": job_id, "mid": message["Message-ID"], "to": to, "template": template,
             "response": str(response[1])[:1000]},
        )  # fmt: skip
    return str(message["Message-ID"])


async def _log(
    engine: AsyncEngine, job_id: str, to: str, template: str, status: str, message_id: str | None, response: str
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO email_log (job_id, smtp_message_id, to_address, template, status, smtp_response) "
                "VALUES (:job, :mid, :to, :template, :status, :response) ON CONFLICT (job_id) DO UPDATE "
                "SET status = EXCLUDED.status, smtp_response = EXCLUDED.smtp_response"
            ),
            {"job": job_id, "mid": message_id, "to": to, "template": template, "status": status,
             "response": response[:1000]},
        )  # fmt: skip
