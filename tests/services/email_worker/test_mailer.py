"""The mailer against a real SMTP server and PostgreSQL: a send under way when its delivery is cancelled (the broker
connection lost, the handler timed out) still finishes and is recorded, so the job's redelivery sends nothing."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from typing import TypeVar

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from email_worker.mailer import Job, SmtpUnavailable, Unrecorded, deliver
from email_worker.settings import Settings
from email_worker.smtp_sessions import SmtpSessions
from libs.db.tables import EmailLog, EmailStatus

SMTP_PORT = 19301
Handler = TypeVar("Handler")


class SlowServer:
    """Accepts every mail, but answers DATA only once `release` is set: the sender waits for its 250 meanwhile."""

    def __init__(self) -> None:
        self.accepted = 0
        self.receiving = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.receiving.set()
        await asyncio.to_thread(self.release.wait, 10)
        self.accepted += 1
        return "250 OK"


@contextlib.contextmanager
def serving(handler: Handler) -> Iterator[Handler]:
    """`handler` answering as an SMTP server on SMTP_PORT."""
    controller = Controller(handler, hostname="127.0.0.1", port=SMTP_PORT)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


@pytest.fixture
def slow_server() -> Iterator[SlowServer]:
    with serving(SlowServer()) as handler:
        yield handler
        handler.release.set()


def settings(database_url: str) -> Settings:
    return Settings(
        _env_file=None,
        smtp_host="127.0.0.1",
        smtp_port=SMTP_PORT,
        database_url=database_url,
        rabbitmq_url="amqp://unused:unused@127.0.0.1/unused",
    )


async def test_a_delivery_cancelled_mid_send_still_records_the_mail_and_its_redelivery_sends_nothing(
    slow_server: SlowServer, engine: AsyncEngine, database_url: str
) -> None:
    unrecorded = Unrecorded()
    smtp = SmtpSessions(settings(database_url))
    job_id = f"email-test:cancelled:{uuid.uuid4()}"
    job = Job(job_id, to="someone@example.com", template="export_ready", subject="s", body="b")
    first = asyncio.create_task(deliver(engine, smtp, unrecorded, [job]))
    await asyncio.to_thread(slow_server.receiving.wait, 10)
    first.cancel()
    redelivery = asyncio.create_task(deliver(engine, smtp, unrecorded, [job]))
    slow_server.release.set()

    assert (await asyncio.wait_for(redelivery, 20)).skipped == [job_id]
    with pytest.raises(asyncio.CancelledError):
        await first
    assert slow_server.accepted == 1
    async with engine.connect() as connection:
        statuses = (await connection.scalars(select(col(EmailLog.status)).where(col(EmailLog.job_id) == job_id))).all()
    assert list(statuses) == [EmailStatus.sent]
    await smtp.close()


class PickyServer:
    """Accepts every mail except to `later@`, which it asks to try again later (451)."""

    def __init__(self) -> None:
        self.accepted: list[str] = []

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("later@"):
            return "451 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.accepted += envelope.rcpt_tos
        return "250 OK"


@pytest.fixture
def picky_server() -> Iterator[PickyServer]:
    with serving(PickyServer()) as handler:
        yield handler


async def test_a_failure_that_is_not_a_refusal_stops_the_command_where_it_happened(
    picky_server: PickyServer, engine: AsyncEngine, database_url: str
) -> None:
    smtp = SmtpSessions(settings(database_url))
    run = uuid.uuid4().hex[:8]
    jobs = [
        Job(f"email-test:{run}:{n}", to=f"{who}@example.com", template="new_lead", subject="s", body="b")
        for n, who in enumerate(("first", "later", "third"))
    ]
    delivered = await deliver(engine, smtp, Unrecorded(), jobs)

    assert list(delivered.sent) == [jobs[0].job_id]
    assert isinstance(delivered.failure, SmtpUnavailable)
    assert picky_server.accepted == ["first@example.com"]
    async with engine.connect() as connection:
        logged = (
            await connection.scalars(select(col(EmailLog.job_id)).where(col(EmailLog.job_id).like(f"%{run}%")))
        ).all()
    assert list(logged) == [jobs[0].job_id]
    await smtp.close()
