"""Contact data never reaches a log line whole: the email-worker, on the real broker and an SMTP server that
refuses the recipient (whose reply names it), logs the refusal with the address masked, and so does the gateway
for what callers send it."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aiosmtpd.controller import Controller
from litestar.testing import AsyncTestClient

from email_worker.main import build as build_email
from email_worker.settings import Settings as EmailSettings
from ingest_gateway.main import build as build_gateway
from ingest_gateway.settings import Settings as GatewaySettings
from libs.contracts import SendEmail
from libs.logging import JsonFormatter
from tests.services.conftest import REFUSED_DOMAIN, MailSink, built_app, eventually, publisher_for


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every log line of this process while the test runs, formatted as the services format them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("under-test"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


@pytest.fixture
async def email_worker(service_env: dict[str, str], database_url: str) -> AsyncIterator[None]:
    smtp = Controller(MailSink(), hostname="127.0.0.1", port=int(service_env["SMTP_PORT"]))
    smtp.start()
    try:
        async with AsyncTestClient(built_app(build_email, EmailSettings, service_env)):
            yield
    finally:
        smtp.stop()


@pytest.mark.usefixtures("email_worker")
async def test_an_smtp_refusal_is_logged_without_the_recipients_address(
    service_env: dict[str, str], log_lines: io.StringIO
) -> None:
    recipient = f"ada.lovelace.{uuid.uuid4().hex[:8]}@{REFUSED_DOMAIN}"
    publisher, broker = await publisher_for(service_env["RABBITMQ_URL"])
    message_id = await publisher.publish(SendEmail(template="export_ready", to=recipient, params={"export_id": "e"}))
    await broker.stop()

    async def refusal_logged() -> bool:
        return any(message_id in line and "550" in line for line in log_lines.getvalue().splitlines())

    await eventually(refusal_logged)
    assert recipient not in log_lines.getvalue()
    assert "a***@r***.example" in log_lines.getvalue()


@pytest.mark.usefixtures("database_url")
async def test_the_gateway_logs_no_contact_data_a_caller_sends(
    service_env: dict[str, str], log_lines: io.StringIO
) -> None:
    email = f"grace.hopper.{uuid.uuid4().hex[:8]}@example.com"
    async with AsyncTestClient(built_app(build_gateway, GatewaySettings, service_env)) as gateway:
        refused = await gateway.post("/api/v1/auth/token", json={"email": email, "password": "+1 415 555 0100"})
        assert refused.status_code == 401
        forged = await gateway.get(f"/api/v1/providers/{uuid.uuid4()}/inbox", headers={"X-Correlation-ID": email})
        assert forged.status_code == 401
    assert "auth.login_refused" in log_lines.getvalue()
    assert email not in log_lines.getvalue()
    assert "555 0100" not in log_lines.getvalue()
