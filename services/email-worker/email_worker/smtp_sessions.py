"""SMTP sessions kept open for the next mail: a connection, the server's greeting, EHLO (and STARTTLS and login when
set) and QUIT cost the worker and the server more than the mail itself, mail after mail.

A session is reused only while it is connected, has been idle less than `SMTP_IDLE_S` and has carried fewer than
`MAILS_PER_SESSION` mails; a session whose mail failed in any way (a refusal, a timeout, a dropped connection) is
closed, never reused, so a reply or a state left over from a failed transaction never meets the next mail. A
session idle longer than `SMTP_IDLE_S` is closed by a timer, not left for the server to cut.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from email.utils import parseaddr

import aiosmtplib

from email_worker.settings import Settings

MAILS_PER_SESSION = 100
"""Servers commonly limit mails per connection (answering 421 past it); a session is ended well before."""


@dataclass(eq=False)
class _Session:
    client: aiosmtplib.SMTP
    mails: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    expiry: asyncio.TimerHandle | None = None


class SmtpSessions:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._idle: list[_Session] = []
        self._local_hostname: str | None = None
        self._closed = False
        self._quitting: set[asyncio.Task[None]] = set()
        # The address alone, as aiosmtplib's send_message took it from the From header, once rather than per mail.
        self._envelope_sender = parseaddr(settings.smtp_from)[1] or settings.smtp_from

    @property
    def sender(self) -> str:
        return self.settings.smtp_from

    async def send(self, to: str, message: bytes) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
        """Sends `message` (its headers and body as written, DATA) to the address `to`, from `smtp_from`'s address,
        on an idle session or a new one; raises aiosmtplib's errors (or OSError, TimeoutError) as `aiosmtplib.send`
        does."""
        session = self._reusable()
        if session is not None:
            try:
                return await self._send_on(session, to, message)
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
                # The server ended the idle session (its own idle timeout, a restart) before this mail; a new
                # session takes it. Were the cut to fall after the server accepted the mail, this sends it again,
                # as retrying the job would: the at-least-once window the module's caller documents.
                pass
        return await self._send_on(await self._open(), to, message)

    async def _send_on(
        self, session: _Session, to: str, message: bytes
    ) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
        try:
            # A server without SMTPUTF8 refuses a non-ASCII address (5xx): a refusal, as it will never take it.
            options = [] if to.isascii() and self._envelope_sender.isascii() else ["SMTPUTF8"]
            response = await session.client.sendmail(self._envelope_sender, [to], message, mail_options=options)
        except BaseException:
            session.client.close()
            raise
        session.mails += 1
        self._release(session)
        return response

    async def close(self) -> None:
        """Ends every idle session politely (QUIT); sessions still sending are closed as they finish."""
        self._closed = True
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(session) for session in idle))

    def _reusable(self) -> _Session | None:
        while self._idle:
            session = self._idle.pop()  # the most recently used: the likeliest to be alive
            if session.expiry is not None:
                session.expiry.cancel()
            if session.client.is_connected and time.monotonic() - session.idle_since < self.settings.smtp_idle_s:
                return session
            session.client.close()
        return None

    async def _open(self) -> _Session:
        if self._local_hostname is None:
            # aiosmtplib would look the name up in a thread for every connection; it does not change.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        settings = self.settings
        client = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            start_tls=settings.smtp_starttls,
            timeout=settings.smtp_timeout_s,
            local_hostname=self._local_hostname,
        )
        await client.connect()
        return _Session(client)

    def _release(self, session: _Session) -> None:
        if self._closed or session.mails >= MAILS_PER_SESSION or self.settings.smtp_idle_s <= 0:
            quitting = asyncio.get_running_loop().create_task(self._quit(session))
            self._quitting.add(quitting)
            quitting.add_done_callback(self._quitting.discard)
            return
        session.idle_since = time.monotonic()
        session.expiry = asyncio.get_running_loop().call_later(self.settings.smtp_idle_s, self._expire, session)
        self._idle.append(session)

    def _expire(self, session: _Session) -> None:
        if session in self._idle:
            self._idle.remove(session)
            session.client.close()

    @staticmethod
    async def _quit(session: _Session) -> None:
        try:
            await session.client.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            session.client.close()  # it was ending anyway
