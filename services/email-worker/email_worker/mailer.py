"""Sending through SMTP, each job once: no database transaction is open during the SMTP call, and a mail the
server accepted is recorded, never sent again, however often its record fails.

One job is handled in three steps: look it up in the email log (a short read), send it, record the server's answer
(a short write). Two deliveries of one job in this process take turns. The three steps run as a task of their own
that a cancelled delivery (its broker connection lost, its handler timed out) does not cancel: a send under way
finishes and is recorded, and the job's redelivery, waiting for its turn, finds it recorded. Should the record fail
(its session killed, the database gone), the acceptance is kept in memory (`Unrecorded`) and the error raised: the
consumer policy holds the delivery for the outage or retries it, and the job, back in this process, is recorded
without being sent again. The one window left where a mail goes out twice: the process dies (or the job's
redelivery goes to another replica) after the server accepted the mail and before its record committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.header import Header
from email.message import Message
from email.mime.text import MIMEText
from email.utils import make_msgid
from typing import Any

import aiosmtplib
from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from email_worker.smtp_sessions import SmtpSessions
from libs.db import retry_on_disconnect
from libs.db.tables import EmailLog, EmailStatus
from libs.messaging.errors import PermanentError, TransientError

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


@dataclass(frozen=True)
class Accepted:
    """The server's acceptance of one job's mail."""

    message_id: str
    response: str


@dataclass
class _Turn:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass
class Unrecorded:
    """One per process: mails the server accepted whose record has not committed yet, and a turn per job, so two
    deliveries of one job never send it side by side."""

    accepted: dict[str, Accepted] = field(default_factory=dict)
    _turns: dict[str, _Turn] = field(default_factory=dict)
    _running: set[asyncio.Task[str | None]] = field(default_factory=set)

    async def uncancelled(self, work: Coroutine[Any, Any, str | None]) -> str | None:
        """Runs `work` as a task that cancelling the caller does not cancel (kept here until it ends)."""
        task = asyncio.get_running_loop().create_task(work)
        self._running.add(task)
        task.add_done_callback(self._ended)
        return await asyncio.shield(task)

    def _ended(self, task: asyncio.Task[str | None]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the delivery that awaited it has reported it, or was cancelled

    @asynccontextmanager
    async def turn(self, job_id: str) -> AsyncIterator[None]:
        turn = self._turns.setdefault(job_id, _Turn())
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if turn.users == 0:
                del self._turns[job_id]


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
    engine: AsyncEngine,
    smtp: SmtpSessions,
    unrecorded: Unrecorded,
    *,
    job_id: str,
    to: str,
    template: str,
    subject: str,
    body: str,
) -> str | None:
    """Sends unless this job was already accepted; returns the Message-ID sent, or None when skipped. Every step is
    one statement: on an `autocommitting` engine each is its own transaction, with no BEGIN or COMMIT round trips."""

    async def already_sent() -> bool:
        async with engine.connect() as connection:
            return await connection.scalar(ALREADY_SENT, {"job_id": job_id}) is not None

    async def once() -> str | None:
        async with unrecorded.turn(job_id):
            # A pooled session killed since its last use costs a second try, not a pause.
            if await retry_on_disconnect(already_sent):
                unrecorded.accepted.pop(job_id, None)
                return None
            accepted = unrecorded.accepted.get(job_id)
            if accepted is None:
                accepted = await _send(engine, smtp, job_id=job_id, to=to, template=template, subject=subject,
                                       body=body)  # fmt: skip
                unrecorded.accepted[job_id] = accepted
            await retry_on_disconnect(
                lambda: _record(engine, unrecorded, accepted, job_id=job_id, to=to, template=template)
            )
            return accepted.message_id

    return await unrecorded.uncancelled(once())


def compose(*, sender: str, to: str, subject: str, body: str, job_id: str) -> Message:
    """One plain-text part. Built with the email package's compat32 API: the modern EmailMessage parses and refolds
    every header through its registry, 4 to 5x the CPU for the same bytes here (a third of the worker's time per
    mail); compat32 still refuses a header value that smuggles in a header of its own."""
    message = MIMEText(body, "plain", "us-ascii" if body.isascii() else "utf-8")
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject if subject.isascii() else Header(subject, "utf-8").encode()
    message["Message-ID"] = make_msgid(domain="fmhl.local")
    message["X-Fmhl-Job"] = job_id
    return message


async def _send(
    engine: AsyncEngine, smtp: SmtpSessions, *, job_id: str, to: str, template: str, subject: str, body: str
) -> Accepted:
    message = compose(sender=smtp.sender, to=to, subject=subject, body=body, job_id=job_id)
    try:
        response = await smtp.send(message)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
        failure = _classify(error)
        if isinstance(failure, SmtpRefused):
            await _log_failure(engine, job_id, to, template, str(failure))
        raise failure from error
    return Accepted(message_id=str(message["Message-ID"]), response=str(response[1])[:1000])


async def _record(
    engine: AsyncEngine, unrecorded: Unrecorded, accepted: Accepted, *, job_id: str, to: str, template: str
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            LOG_SENT,
            {"job_id": job_id, "smtp_message_id": accepted.message_id, "to_address": to, "template": template,
             "status": EmailStatus.sent, "smtp_response": accepted.response},
        )  # fmt: skip
    unrecorded.accepted.pop(job_id, None)


async def _log_failure(engine: AsyncEngine, job_id: str, to: str, template: str, response: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            LOG_FAILED,
            {"job_id": job_id, "smtp_message_id": None, "to_address": to, "template": template,
             "status": EmailStatus.failed, "smtp_response": response[:1000]},
        )  # fmt: skip
