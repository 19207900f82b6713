"""Workers against what any publisher can put on the broker, on the real RabbitMQ, PostgreSQL and an SMTP server:
properties that are not UTF-8, a `reply_to` naming someone's queue, no message id, numbers too long to convert."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
import pytest
from aiosmtpd.controller import Controller
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pamqp import commands
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from dlq_service.main import build as build_dlq
from dlq_service.settings import Settings as DlqSettings
from email_worker.main import build as build_email
from email_worker.settings import Settings as EmailSettings
from libs.contracts import SendEmail
from libs.messaging.broker import EVENTS
from libs.messaging.wire import UNDECODABLE_PROPERTIES
from tests.services.conftest import MailSink, built_app, eventually

SIGNING_KEY = "test-only-retry-signing-key-0123456789abcdef"


def crafted(
    *, replacements: tuple[tuple[bytes, bytes], ...] = (), drop_message_id: bool = False, **properties: Any
) -> commands.Basic.Properties:
    """Properties as a careless or hostile client puts them on the wire: each placeholder swapped for raw bytes
    of the same length (aiormq encodes strict UTF-8 and gives every message an id; the wire need not)."""

    class Crafted(commands.Basic.Properties):
        def marshal(self) -> bytes:
            kept = {name: getattr(self, name) for name in self.__slots__}
            if drop_message_id:
                kept.pop("message_id")
            wire = commands.Basic.Properties(**kept).marshal()
            for placeholder, raw in replacements:
                assert len(placeholder) == len(raw)
                wire = wire.replace(placeholder, raw)
            return wire

    return Crafted(**properties)


async def publish_crafted(
    url: str,
    body: bytes,
    properties: commands.Basic.Properties,
    *,
    exchange: str = EVENTS.name,
    routing_key: str = "email.send",
) -> None:
    connection = await aiormq.connect(url)
    channel = await connection.channel()
    await channel.confirm_delivery()
    await channel.basic_publish(body, exchange=exchange, routing_key=routing_key, properties=properties)
    await connection.close()


@dataclass
class Workers:
    email: AsyncTestClient[Litestar]
    dlq: AsyncTestClient[Litestar]
    engine: AsyncEngine
    mail: MailSink
    url: str
    readiness: list[int] = field(default_factory=list)

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as connection:
            return await connection.scalar(text(sql), params)

    async def send(self, to: str, message_id: str | None = None, **params: str | int) -> str:
        message_id = message_id or f"email-{uuid.uuid4().hex}"
        connection = await aio_pika.connect(self.url)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS.name)
        body = SendEmail(template="low_balance", to=to, params=params).model_dump_json().encode()
        await exchange.publish(
            aio_pika.Message(body, message_id=message_id, type="email.send", delivery_mode=2), routing_key="email.send"
        )
        await connection.close()
        return message_id


@pytest.fixture(scope="module")
async def workers(service_env: dict[str, str], database_url: str) -> AsyncIterator[Workers]:
    mail = MailSink()
    smtp = Controller(mail, hostname="127.0.0.1", port=int(service_env["SMTP_PORT"]))
    smtp.start()
    env = service_env | {"DLQ_RETRY_SIGNING_KEY": SIGNING_KEY}
    engine = create_async_engine(database_url)
    async with AsyncExitStack() as stack:
        email = await stack.enter_async_context(AsyncTestClient(built_app(build_email, EmailSettings, env)))
        dlq = await stack.enter_async_context(AsyncTestClient(built_app(build_dlq, DlqSettings, env)))
        state = Workers(email, dlq, engine, mail, service_env["RABBITMQ_URL"])

        async def watch_readiness() -> None:
            while True:
                state.readiness.append((await email.get("/health/ready")).status_code)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch_readiness())
        yield state
        watcher.cancel()
    await engine.dispose()
    smtp.stop()


async def test_a_message_whose_properties_are_not_utf8_is_dead_lettered_while_its_neighbours_are_handled(
    workers: Workers,
) -> None:
    run = uuid.uuid4().hex[:8]
    before = f"before-{run}@example.com"
    after = f"after-{run}@example.com"
    bad = f"bad-{run}@example.com"
    await workers.send(before)
    checked_from = len(workers.readiness)
    placeholder = f"ID-{run}-PLACEHOLDER".encode()
    raw_id = b"id-\xff\xfe-" + placeholder[6:]
    body = SendEmail(template="low_balance", to=bad, params={}).model_dump_json().encode()
    await publish_crafted(
        workers.url, body,
        crafted(message_id=placeholder.decode(), message_type="email.send", correlation_id=f"cid-{run}",
                replacements=((placeholder, raw_id),)),
    )  # fmt: skip
    await workers.send(after)

    async def neighbours_mailed() -> bool:
        return bool(workers.mail.to(before)) and bool(workers.mail.to(after))

    async def bad_one_recorded() -> bool:
        return bool(await workers.scalar("SELECT count(*) FROM dead_letter_queue WHERE raw_body = :b", b=body))

    await eventually(neighbours_mailed)
    await eventually(bad_one_recorded)
    async with workers.engine.connect() as connection:
        entry = (
            await connection.execute(text("SELECT * FROM dead_letter_queue WHERE raw_body = :b"), {"b": body})
        ).one()._mapping  # fmt: skip
    assert workers.mail.to(bad) == []
    assert (entry["queue_name"], entry["error_type"]) == ("email", "UndecodableProperties")
    assert "message_id" in entry["error_message"]
    assert entry["message_id"] == "id-\\xff\\xfe-" + placeholder[6:].decode()
    assert entry["headers"][UNDECODABLE_PROPERTIES] == {"message_id": "id-\\xff\\xfe-" + placeholder[6:].decode()}
    assert bytes(entry["raw_body"]) == body
    assert set(workers.readiness[checked_from:]) == {200}
    assert len(workers.readiness) > checked_from


async def test_a_worker_answers_no_reply_to(workers: Workers) -> None:
    connection = await aio_pika.connect(workers.url)
    channel = await connection.channel(publisher_confirms=True)
    stranger = await channel.declare_queue(f"stranger-{uuid.uuid4().hex[:8]}", exclusive=True)
    to = f"reply-{uuid.uuid4().hex[:8]}@example.com"
    body = SendEmail(template="low_balance", to=to, params={}).model_dump_json().encode()
    exchange = await channel.get_exchange(EVENTS.name)
    await exchange.publish(
        aio_pika.Message(body, message_id=uuid.uuid4().hex, type="email.send", reply_to=stranger.name),
        routing_key="email.send",
    )

    async def mailed() -> bool:
        return bool(workers.mail.to(to))

    await eventually(mailed)
    deadline = asyncio.get_running_loop().time() + 1.5
    while asyncio.get_running_loop().time() < deadline:
        assert (await channel.declare_queue(stranger.name, passive=True)).declaration_result.message_count == 0
        await asyncio.sleep(0.1)
    await connection.close()


async def test_emails_without_a_message_id_are_refused_into_the_dlq_not_skipped_as_already_sent(
    workers: Workers,
) -> None:
    run = uuid.uuid4().hex[:8]
    bodies = []
    for n in range(2):
        to = f"no-id-{run}-{n}@example.com"
        body = SendEmail(template="low_balance", to=to, params={}).model_dump_json().encode()
        bodies.append(body)
        await publish_crafted(
            workers.url, body, crafted(message_id="dropped", message_type="email.send", drop_message_id=True)
        )

    async def both_recorded() -> bool:
        found = await workers.scalar(
            "SELECT count(*) FROM dead_letter_queue WHERE raw_body = ANY(:bodies) AND error_type = 'MissingMessageId'",
            bodies=bodies,
        )
        return bool(found == 2)

    await eventually(both_recorded)
    assert all(workers.mail.to(f"no-id-{run}-{n}@example.com") == [] for n in range(2))
    message = await workers.scalar(
        "SELECT error_message FROM dead_letter_queue WHERE raw_body = :b", b=bodies[0]
    )  # fmt: skip
    assert "no message_id" in message


async def test_an_amount_too_long_to_convert_is_dead_lettered_on_its_first_failure(workers: Workers) -> None:
    message_id = await workers.send(f"huge-{uuid.uuid4().hex[:8]}@example.com", balance_cents="9" * 5_000)

    async def recorded() -> bool:
        return bool(await workers.scalar("SELECT count(*) FROM dead_letter_queue WHERE message_id = :m", m=message_id))

    await eventually(recorded)
    async with workers.engine.connect() as connection:
        entry = (
            await connection.execute(text("SELECT * FROM dead_letter_queue WHERE message_id = :m"), {"m": message_id})
        ).one()._mapping  # fmt: skip
    assert (entry["error_type"], entry["attempts"]) == ("ValueError", 1)
    assert entry["headers"]["fmhl-error-class"] == "permanent"
