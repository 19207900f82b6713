"""Sending through SMTP, each job once: no database transaction is open during the SMTP call, and a mail the
server accepted is recorded, never sent again, however often its record fails.

The jobs of one command are handled in three steps: look them all up in the email log (one short read), then send
each one not found there and record the server's answer the moment it accepted it (a short write per mail, so no
acceptance waits for another mail before its record). Two deliveries sharing a job in this process take turns.
The steps run as a task of their own that a cancelled delivery (its broker connection lost, its handler timed
out) does not cancel: a send under way finishes and is recorded, and the job's redelivery, waiting for its turn,
finds it recorded. Should a record fail (its session killed, the database gone), the acceptance is kept in memory
(`Unrecorded`) and the error raised: the consumer policy holds the delivery for the outage or retries it, and the
job, back in this process, is recorded without being sent again. The one window left where a mail goes out twice:
the process dies (or the job's redelivery goes to another replica) after the server accepted the mail and before
its record committed. (A redelivery on another replica reads the log once for its whole command, so for a later
mail of it that race starts at that read, not right before its own send.)
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.header import Header
from email.utils import make_msgid
from typing import Any, TypeVar

import aiosmtplib
from sqlalchemy import String, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from email_worker.smtp_sessions import SmtpSessions
from libs.db import retry_on_disconnect
from libs.db.tables import EmailLog, EmailStatus
from libs.messaging.errors import PermanentError, TransientError

T = TypeVar("T")

# One statement for a command's jobs, however many: an array parameter, not an IN list that changes with the count.
ALREADY_SENT = select(col(EmailLog.job_id)).where(
    col(EmailLog.job_id) == any_(bindparam("job_ids", type_=ARRAY(String))),
    col(EmailLog.status) == EmailStatus.sent,
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
class Job:
    """One mail to send once, rendered."""

    job_id: str
    to: str
    template: str
    subject: str
    body: str


@dataclass(frozen=True)
class Accepted:
    """The server's acceptance of one job's mail."""

    message_id: str
    response: str


@dataclass(frozen=True)
class Delivered:
    """What became of a command's jobs."""

    sent: dict[str, str] = field(default_factory=dict)
    """By job id: the Message-ID the server accepted now."""
    skipped: list[str] = field(default_factory=list)
    """Jobs whose mail had been sent before."""
    failure: Exception | None = None
    """The error to settle the delivery with: the one that stopped the command (its retry skips what was sent),
    else the refusals, every reply in one `SmtpRefused`."""


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
    _running: set[asyncio.Task[Any]] = field(default_factory=set)

    async def uncancelled(self, work: Coroutine[Any, Any, T]) -> T:
        """Runs `work` as a task that cancelling the caller does not cancel (kept here until it ends)."""
        task = asyncio.get_running_loop().create_task(work)
        self._running.add(task)
        task.add_done_callback(self._ended)
        return await asyncio.shield(task)

    def _ended(self, task: asyncio.Task[Any]) -> None:
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

    @asynccontextmanager
    async def turns(self, job_ids: Iterable[str]) -> AsyncIterator[None]:
        """The turns of several jobs, taken in sorted order: deliveries sharing jobs never wait in a circle."""
        async with AsyncExitStack() as stack:
            for job_id in sorted(set(job_ids)):
                await stack.enter_async_context(self.turn(job_id))
            yield


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


async def deliver(engine: AsyncEngine, smtp: SmtpSessions, unrecorded: Unrecorded, jobs: Sequence[Job]) -> Delivered:
    """Sends every job not accepted before, one after the other, each recorded as soon as the server accepted it.
    A refusal (5xx) is logged and the next job sent; any other failure (the server or the database unreachable)
    stops the command there, so nothing more is sent while a record may not be written: the rest go with the
    delivery's retry. Every step is one statement: on an `autocommitting` engine each is its own transaction, with
    no BEGIN or COMMIT round trips."""

    async def already_sent() -> set[str]:
        async with engine.connect() as connection:
            return set(await connection.scalars(ALREADY_SENT, {"job_ids": [job.job_id for job in jobs]}))

    async def send_once(job: Job) -> str:
        accepted = unrecorded.accepted.get(job.job_id)
        if accepted is None:
            accepted = await _send(engine, smtp, job)
            unrecorded.accepted[job.job_id] = accepted
        await retry_on_disconnect(lambda: _record(engine, unrecorded, accepted, job))
        return accepted.message_id

    async def once() -> Delivered:
        delivered = Delivered()
        refused: list[tuple[Job, SmtpRefused]] = []
        async with unrecorded.turns(job.job_id for job in jobs):
            # A pooled session killed since its last use costs a second try, not a pause.
            sent_before = await retry_on_disconnect(already_sent)
            for job in jobs:
                if job.job_id in sent_before:
                    unrecorded.accepted.pop(job.job_id, None)
                    delivered.skipped.append(job.job_id)
                    continue
                try:
                    delivered.sent[job.job_id] = await send_once(job)
                except SmtpRefused as error:
                    refused.append((job, error))
                except Exception as error:
                    return Delivered(delivered.sent, delivered.skipped, error)
        return Delivered(delivered.sent, delivered.skipped, _refusals(refused, len(jobs)))

    return await unrecorded.uncancelled(once())


def _refusals(refused: Sequence[tuple[Job, SmtpRefused]], jobs: int) -> SmtpRefused | None:
    """The reply itself for a command of one mail; for several, each refused job with its reply."""
    if not refused:
        return None
    if jobs == 1:
        return refused[0][1]
    refusals = SmtpRefused("; ".join(f"{job.job_id}: {error}" for job, error in refused))
    refusals.__cause__ = refused[0][1]
    return refusals


@dataclass(frozen=True)
class Composed:
    message_id: str
    raw: bytes
    """The message as sent (DATA), headers and body, CRLF line ends."""


HEADER_FOLD_AT = 78
"""RFC 5322's recommended line length: a longer header value is folded (RFC 2047 encoding for text outside ASCII)."""
PLAIN_ASCII = (
    b'Content-Type: text/plain; charset="us-ascii"\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: 7bit\r\n'
)
PLAIN_UTF8 = b'Content-Type: text/plain; charset="utf-8"\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n'


def _header(name: str, value: str, *, address: bool = False) -> str:
    """One header line; a value that holds a line break (a header of its own smuggled in) is refused. An address
    outside ASCII is written as UTF-8 (the session asks for SMTPUTF8), as aiosmtplib's generator did."""
    if "\r" in value or "\n" in value:
        raise HeaderParseError(f"{name}: a header value cannot hold a line break")
    if (address and not value.isascii()) or (value.isascii() and len(name) + 2 + len(value) <= HEADER_FOLD_AT):
        return f"{name}: {value}\r\n"
    folded = Header(value, "us-ascii" if value.isascii() else "utf-8", header_name=name).encode()
    return f"{name}: {folded.replace(chr(10), chr(13) + chr(10))}\r\n"


def compose(*, sender: str, to: str, subject: str, body: str, job_id: str) -> Composed:
    """One plain-text part, the bytes written directly: the email package's message object, its generator and
    aiosmtplib's parse of the addresses back out of the headers cost about a sixth of the worker's CPU per mail,
    for the same bytes (the headers as MIMEText writes them; a body outside ASCII in base64)."""
    message_id = make_msgid(domain="fmhl.local")
    headers = (_header("From", sender, address=True) + _header("To", to, address=True) + _header("Subject", subject)
               + _header("Message-ID", message_id) + _header("X-Fmhl-Job", job_id))  # fmt: skip
    if body.isascii():
        raw = PLAIN_ASCII + headers.encode() + b"\r\n" + body.encode()
    else:
        raw = PLAIN_UTF8 + headers.encode() + b"\r\n" + base64.encodebytes(body.encode())
    return Composed(message_id, raw)


async def _send(engine: AsyncEngine, smtp: SmtpSessions, job: Job) -> Accepted:
    message = compose(sender=smtp.sender, to=job.to, subject=job.subject, body=job.body, job_id=job.job_id)
    try:
        response = await smtp.send(job.to, message.raw)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
        failure = _classify(error)
        if isinstance(failure, SmtpRefused):
            await _log_failure(engine, job, str(failure))
        raise failure from error
    return Accepted(message_id=message.message_id, response=str(response[1])[:1000])


async def _record(engine: AsyncEngine, unrecorded: Unrecorded, accepted: Accepted, job: Job) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            LOG_SENT,
            {"job_id": job.job_id, "smtp_message_id": accepted.message_id, "to_address": job.to,
             "template": job.template, "status": EmailStatus.sent, "smtp_response": accepted.response},
        )  # fmt: skip
    unrecorded.accepted.pop(job.job_id, None)


async def _log_failure(engine: AsyncEngine, job: Job, response: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            LOG_FAILED,
            {"job_id": job.job_id, "smtp_message_id": None, "to_address": job.to, "template": job.template,
             "status": EmailStatus.failed, "smtp_response": response[:1000]},
        )  # fmt: skip
