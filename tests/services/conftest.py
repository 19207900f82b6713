"""The lead pipeline in one process on the real RabbitMQ, PostgreSQL and an aiosmtpd server:
gateway, distribution-worker, email-worker and export-worker built by their own `build` functions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

import aio_pika
import pyotp
import pytest
from aio_pika.abc import AbstractIncomingMessage
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from faststream.rabbit import RabbitBroker
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from distribution_worker.main import build as build_distribution
from distribution_worker.settings import Settings as DistributionSettings
from dlq_service.main import build as build_dlq
from dlq_service.settings import Settings as DlqSettings
from email_worker.main import build as build_email
from email_worker.settings import Settings as EmailSettings
from export_worker.main import build as build_export
from export_worker.settings import Settings as ExportSettings
from ingest_gateway.cli import create_lead_source, create_user
from ingest_gateway.main import build as build_gateway
from ingest_gateway.settings import Settings as GatewaySettings
from libs.auth import TotpSecrets
from libs.health import Readiness
from libs.messaging.broker import create_broker
from libs.messaging.publisher import Publisher
from libs.messaging.topology import DEAD_LETTER_EXCHANGE, TOPOLOGY
from libs.settings import load_settings
from libs.telemetry import Telemetry, setup_telemetry

REFUSED_DOMAIN = "refused.example"
PASSWORD = "correct horse battery staple"


class MailSink:
    """A real SMTP server: keeps every accepted mail, refuses `refused.example` (and any added domain) with 550."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refused_domains = {REFUSED_DOMAIN}

    async def handle_RCPT(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.rsplit("@", 1)[-1] in self.refused_domains:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content: Any = envelope.original_content or envelope.content
        self.messages.append(message_from_bytes(content if isinstance(content, bytes) else str(content).encode()))
        return "250 accepted"

    def to(self, address: str) -> list[Message]:
        return [message for message in self.messages if message["To"] == address]


Client = AsyncTestClient[Litestar]
Build = Callable[[Any, Telemetry], tuple[Litestar, Readiness]]


@dataclass
class Pipeline:
    gateway: Client
    workers: dict[str, Client]
    engine: AsyncEngine
    mail: MailSink
    service_env: dict[str, str]
    smtp: Controller
    extra: list[Client] = field(default_factory=list)

    def restart_smtp(self) -> None:
        self.smtp = Controller(self.mail, hostname="127.0.0.1", port=int(self.service_env["SMTP_PORT"]))
        self.smtp.start()

    @property
    def totp(self) -> TotpSecrets:
        return TotpSecrets.from_keys(self.service_env["TOTP_ENCRYPTION_KEY"])

    async def admin_headers(self) -> dict[str, str]:
        email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
        _, secret = await create_user(self.engine, email, "admin", PASSWORD, None, True, totp=self.totp)
        assert secret is not None
        response = await self.gateway.post(
            "/api/v1/auth/token", json={"email": email, "password": PASSWORD, "totp_code": pyotp.TOTP(secret).now()}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def provider_headers(self, provider_id: uuid.UUID) -> dict[str, str]:
        email = f"provider-{uuid.uuid4().hex[:8]}@example.com"
        await create_user(self.engine, email, "provider", PASSWORD, provider_id, False, totp=self.totp)
        response = await self.gateway.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    async def lead_source(self, trusted: bool = False) -> dict[str, str]:
        _, api_key = await create_lead_source(self.engine, f"source-{uuid.uuid4().hex[:6]}", trusted)
        return {"X-API-Key": api_key}

    async def provider(
        self, admin: dict[str, str], *, category: str, zips: list[str], price_cents: int, balance_cents: int,
        email: str | None = None, low_balance_threshold_cents: int = 0, daily_cap: int | None = None,
    ) -> uuid.UUID:  # fmt: skip
        created = await self.gateway.post(
            "/api/v1/providers",
            json={"name": "Roofers Inc", "email": email or f"p-{uuid.uuid4().hex[:8]}@example.com",
                  "low_balance_threshold_cents": low_balance_threshold_cents},
            headers=admin,
        )  # fmt: skip
        assert created.status_code == 201, created.text
        provider_id = uuid.UUID(created.json()["id"])
        subscription = await self.gateway.post(
            f"/api/v1/providers/{provider_id}/subscriptions",
            json={"category": category, "zip_codes": zips, "price_cents": price_cents, "daily_cap": daily_cap},
            headers=admin,
        )
        assert subscription.status_code == 201, subscription.text
        if balance_cents:
            topped = await self.gateway.post(
                f"/api/v1/providers/{provider_id}/top-ups", json={"amount_cents": balance_cents}, headers=admin
            )
            assert topped.status_code == 201, topped.text
        return provider_id

    async def submit(self, source: dict[str, str], *, category: str, zip_code: str = "94107", **extra: Any) -> str:
        lead = {"external_id": f"ext-{uuid.uuid4().hex}", "category": category, "zip": zip_code,
                "contact": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+1 415 5550100"}}  # fmt: skip
        response = await self.gateway.post("/api/v1/leads", json=lead | extra, headers=source)
        assert response.status_code == 202, response.text
        return str(response.json()["lead_id"])

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as connection:
            return await connection.scalar(text(sql), params)

    async def metrics(self, client: Client) -> str:
        return (await client.get("/metrics")).text


def metric_value(exposition: str, line_start: str) -> float:
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith(line_start):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


@dataclass
class DeadLetters:
    """Every dead letter published while the observer runs (an exclusive queue on the dead-letter fanout)."""

    messages: list[AbstractIncomingMessage] = field(default_factory=list)

    async def for_message(self, message_id: str, timeout: float = 15.0) -> AbstractIncomingMessage:
        async with asyncio.timeout(timeout):
            while True:
                for message in self.messages:
                    if message.message_id == message_id:
                        return message
                await asyncio.sleep(0.05)


@pytest.fixture
async def dead_letters(rabbitmq_url: str) -> AsyncIterator[DeadLetters]:
    observed = DeadLetters()
    connection = await aio_pika.connect_robust(rabbitmq_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(await channel.get_exchange(DEAD_LETTER_EXCHANGE))

    async def keep(message: AbstractIncomingMessage) -> None:
        await message.ack()
        observed.messages.append(message)

    await queue.consume(keep)
    yield observed
    await connection.close()


async def publisher_for(rabbitmq_url: str) -> tuple[Publisher, RabbitBroker]:
    telemetry = setup_telemetry("test-publisher")
    broker = create_broker(rabbitmq_url, telemetry, service="test-publisher")
    await broker.connect()
    return Publisher(broker, TOPOLOGY, telemetry, 5.0), broker


def settings_for(cls: type[Any], env: dict[str, str], **overrides: Any) -> Any:
    return load_settings(cls, **({key.lower(): value for key, value in env.items()} | overrides))


def built_app(build: Build, settings_cls: type[Any], env: dict[str, str]) -> Litestar:
    """What the service's `main` builds, from the test environment instead of the process environment."""
    settings = settings_for(settings_cls, env)
    return build(settings, setup_telemetry(settings.service_name))[0]


@pytest.fixture(scope="module")
async def pipeline(service_env: dict[str, str], database_url: str) -> AsyncIterator[Pipeline]:
    mail = MailSink()
    controller = Controller(mail, hostname="127.0.0.1", port=int(service_env["SMTP_PORT"]))
    controller.start()
    engine = create_async_engine(database_url)
    async with AsyncExitStack() as stack:
        apps = {
            "distribution": built_app(build_distribution, DistributionSettings, service_env),
            "email": built_app(build_email, EmailSettings, service_env),
            "export": built_app(build_export, ExportSettings, service_env),
            "dlq": built_app(build_dlq, DlqSettings, service_env),
        }
        gateway_app = built_app(build_gateway, GatewaySettings, service_env)
        gateway = await stack.enter_async_context(AsyncTestClient(gateway_app))
        workers = {name: await stack.enter_async_context(AsyncTestClient(app)) for name, app in apps.items()}
        pipeline = Pipeline(gateway, workers, engine, mail, service_env, controller)
        yield pipeline
    await engine.dispose()
    pipeline.smtp.stop()
