"""SMTP sessions against a real SMTP server (aiosmtpd): mails back to back share one connection, and a session is
never reused once its mail failed, once it has been idle too long, or once the server has gone away."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from email_worker.mailer import compose
from email_worker.settings import Settings
from email_worker.smtp_sessions import MAILS_PER_SESSION, SmtpSessions

REFUSED = "nobody@example.com"


class CountingServer:
    """Counts the connections greeted (one EHLO each) and the mails accepted; refuses one address with 550."""

    def __init__(self) -> None:
        self.connections = 0
        self.accepted: list[str] = []
        self.lock = threading.Lock()

    async def handle_EHLO(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        with self.lock:
            self.connections += 1
        session.host_name = hostname
        return responses

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address == REFUSED:
            return "550 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        with self.lock:
            self.accepted.extend(envelope.rcpt_tos)
        return "250 accepted"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def server(port: int) -> Iterator[CountingServer]:
    handler = CountingServer()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler
    controller.stop()


def sessions(port: int, *, idle_s: float = 30.0) -> SmtpSessions:
    return SmtpSessions(
        Settings(
            _env_file=None,
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_idle_s=idle_s,
            database_url="postgresql+asyncpg://unused:unused@127.0.0.1/unused",
            rabbitmq_url="amqp://unused:unused@127.0.0.1/unused",
        )
    )


def mail(to: str) -> tuple[str, bytes]:
    """The recipient and the message as `SmtpSessions.send` takes them."""
    return to, compose(sender="fmhl-ops <no-reply@fmhl.local>", to=to, subject="test", body="body", job_id=to).raw


async def test_mails_sent_one_after_another_share_one_connection(server: CountingServer, port: int) -> None:
    smtp = sessions(port)
    for n in range(5):
        await smtp.send(*mail(f"user{n}@example.com"))
    await smtp.close()

    assert server.accepted == [f"user{n}@example.com" for n in range(5)]
    assert server.connections == 1


async def test_concurrent_mails_each_get_a_session_and_later_mails_reuse_them(
    server: CountingServer, port: int
) -> None:
    smtp = sessions(port)
    await asyncio.gather(*(smtp.send(*mail(f"first{n}@example.com")) for n in range(3)))
    await asyncio.gather(*(smtp.send(*mail(f"second{n}@example.com")) for n in range(3)))
    await smtp.close()

    assert len(server.accepted) == 6
    assert server.connections == 3


async def test_a_session_whose_mail_was_refused_is_not_reused(server: CountingServer, port: int) -> None:
    smtp = sessions(port)
    await smtp.send(*mail("before@example.com"))
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await smtp.send(*mail(REFUSED))
    await smtp.send(*mail("after@example.com"))
    await smtp.close()

    assert server.accepted == ["before@example.com", "after@example.com"]
    assert server.connections == 2


async def test_a_session_idle_longer_than_smtp_idle_s_is_closed_and_the_next_mail_opens_another(
    server: CountingServer, port: int
) -> None:
    smtp = sessions(port, idle_s=0.2)
    await smtp.send(*mail("before@example.com"))
    await asyncio.sleep(0.5)  # the idle limit itself is what is tested: the session must be gone after it
    await smtp.send(*mail("after@example.com"))
    await smtp.close()

    assert server.accepted == ["before@example.com", "after@example.com"]
    assert server.connections == 2


async def test_with_smtp_idle_s_zero_every_mail_has_its_own_connection(server: CountingServer, port: int) -> None:
    smtp = sessions(port, idle_s=0)
    for n in range(3):
        await smtp.send(*mail(f"user{n}@example.com"))
    await smtp.close()

    assert server.connections == 3


async def test_a_session_ends_after_mails_per_session_mails(server: CountingServer, port: int) -> None:
    smtp = sessions(port)
    for n in range(MAILS_PER_SESSION + 1):
        await smtp.send(*mail(f"user{n}@example.com"))
    await smtp.close()

    assert len(server.accepted) == MAILS_PER_SESSION + 1
    assert server.connections == 2


async def test_a_mail_after_the_server_restarted_goes_out_on_a_new_connection_without_an_error(port: int) -> None:
    smtp = sessions(port)
    first = CountingServer()
    controller = Controller(first, hostname="127.0.0.1", port=port)
    controller.start()
    await smtp.send(*mail("before@example.com"))
    controller.stop()  # the idle session's connection is cut by the server
    second = CountingServer()
    controller = Controller(second, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        await smtp.send(*mail("after@example.com"))
        await smtp.close()
    finally:
        controller.stop()

    assert first.accepted == ["before@example.com"]
    assert second.accepted == ["after@example.com"]
    assert second.connections == 1
