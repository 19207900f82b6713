"""No input gets a 500 from the gateway: hostile bodies, numbers, strings, dates and cursors are each a 400 that
names what is wrong, on the real gateway and database (a 500 here would be the database or a decoder refusing)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from ingest_gateway.accounts import create_lead_source
from ingest_gateway.main import build
from ingest_gateway.settings import Settings
from libs.auth import Principal, Tokens
from libs.db.tables import Lead, Provider, Subscription
from libs.telemetry import setup_telemetry
from tests.conftest import TEST_JWT_SECRET
from tests.services.conftest import settings_for

LEAD = {"external_id": "ext-1", "category": "roofing", "zip": "94107",
        "contact": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+1 415 5550100"}}  # fmt: skip


@dataclass
class Gateway:
    client: AsyncTestClient[Litestar]
    admin: dict[str, str]
    source: dict[str, str]
    provider_id: uuid.UUID
    provider: dict[str, str]

    async def post(self, path: str, body: Any, headers: dict[str, str]) -> Any:
        return await self.client.post(path, json=body, headers=headers)

    async def post_raw(self, path: str, body: bytes, headers: dict[str, str]) -> Any:
        return await self.client.post(path, content=body, headers=headers | {"Content-Type": "application/json"})


@pytest.fixture(scope="module")
async def gateway(service_env: dict[str, str], database_url: str) -> AsyncIterator[Gateway]:
    settings = settings_for(Settings, service_env)
    app = build(settings, setup_telemetry("ingest-gateway-inputs"))[0]
    tokens = Tokens(TEST_JWT_SECRET, "fmhl-ops", "fmhl-api", 900)
    engine = create_async_engine(database_url)
    _, api_key = await create_lead_source(engine, f"inputs-{uuid.uuid4().hex[:6]}", trusted=False)
    await engine.dispose()
    admin = Principal(subject=str(uuid.uuid4()), role="admin", provider_id=None, amr=("pwd", "otp"))
    async with AsyncTestClient(app, raise_server_exceptions=False) as client:
        admin_headers = {"Authorization": f"Bearer {tokens.issue(admin)}"}
        created = await client.post("/api/v1/providers", json={"name": "P", "email": "p@example.com"},
                                    headers=admin_headers)  # fmt: skip
        assert created.status_code == 201, created.text
        provider_id = uuid.UUID(created.json()["id"])
        provider = Principal(subject=str(uuid.uuid4()), role="provider", provider_id=provider_id, amr=("pwd",))
        yield Gateway(client, admin_headers, {"X-API-Key": api_key}, provider_id,
                      {"Authorization": f"Bearer {tokens.issue(provider)}"})  # fmt: skip


def column_length(column: Any) -> int:
    """The length the table declares, read from the column itself."""
    return int(column.type.length)


def cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "body",
    [b"[" * 30_000 + b"]" * 30_000, b'{"external_id": "\xff\xfe"}', b'{"a": ' * 5_000 + b"1" + b"}" * 5_000,
     b"\x00", b'{"external_id": "\\ud800"}'],
    ids=["deeply-nested-array", "not-utf8", "deeply-nested-object", "nul-byte", "lone-surrogate"],
)  # fmt: skip
async def test_a_body_the_decoder_chokes_on_is_a_400(gateway: Gateway, body: bytes) -> None:
    response = await gateway.post_raw("/api/v1/leads", body, gateway.source)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(
    "amount",
    ["true", "1.0", '"100"', "9" * 5000, "1e400", "-1", "0", "18446744073709551616"],
    ids=["true", "float", "string", "5000-digits", "1e400", "negative", "zero", "beyond-bigint"],
)
async def test_an_amount_of_cents_is_a_whole_positive_json_integer(gateway: Gateway, amount: str) -> None:
    body = f'{{"amount_cents": {amount}}}'.encode()
    response = await gateway.post_raw(f"/api/v1/providers/{gateway.provider_id}/top-ups", body, gateway.admin)
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("field", ["price_cents", "daily_cap"])
async def test_subscription_numbers_refuse_booleans(gateway: Gateway, field: str) -> None:
    subscription = {"category": "roofing", "zip_codes": ["94107"], "price_cents": 100} | {field: True}
    response = await gateway.post(f"/api/v1/providers/{gateway.provider_id}/subscriptions", subscription, gateway.admin)
    assert response.status_code == 400
    assert field in response.text


@pytest.mark.parametrize(
    ("path", "body", "field", "column"),
    [
        ("/api/v1/leads", LEAD, "category", Lead.category),
        ("/api/v1/leads", LEAD, "external_id", Lead.external_id),
        ("/api/v1/providers", {"name": "P", "email": "p@example.com"}, "name", Provider.name),
        ("/api/v1/providers/{provider}/subscriptions", {"category": "c", "zip_codes": ["94107"], "price_cents": 1},
         "category", Subscription.category),
    ],
    ids=["lead-category", "lead-external-id", "provider-name", "subscription-category"],
)  # fmt: skip
async def test_a_string_may_be_as_long_as_its_column_and_no_longer(
    gateway: Gateway, path: str, body: dict[str, Any], field: str, column: Any
) -> None:
    headers = gateway.source if path == "/api/v1/leads" else gateway.admin
    url = path.format(provider=gateway.provider_id)
    length = column_length(column)
    # A lead's external id must be new for each accepted lead.
    fresh = body | {"external_id": uuid.uuid4().hex} if path == "/api/v1/leads" else body
    too_long = await gateway.post(url, fresh | {field: "x" * (length + 1)}, headers)
    assert too_long.status_code == 400
    assert field in too_long.text
    fits = await gateway.post(url, fresh | {field: (uuid.uuid4().hex * 20)[:length]}, headers)
    assert fits.status_code in (201, 202), fits.text


async def test_a_provider_email_longer_than_its_column_is_a_400(gateway: Gateway) -> None:
    email = "a" * (column_length(Provider.email) - len("@example.com") + 1) + "@example.com"
    response = await gateway.post("/api/v1/providers", {"name": "P", "email": email}, gateway.admin)
    assert response.status_code == 400
    assert "email" in response.text


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"to": "9999-12-31"}, "to"),
        ({"from": "10000-01-01"}, "from"),
        ({"from": "0000-01-01"}, "from"),
        ({"cursor": cursor(f"9999-12-31T23:59:59-23:59|{uuid.uuid4()}")}, "cursor"),
        ({"cursor": cursor(f"0001-01-01T00:00:00+23:59|{uuid.uuid4()}")}, "cursor"),
        ({"cursor": cursor(f"2030-01-01T00:00:00|{uuid.uuid4()}")}, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b"\xff\xfe|x").decode()}, "cursor"),
        ({"cursor": "%ff%fe"}, "cursor"),
        ({"limit": "9" * 5000}, "limit"),
        ({"limit": "true"}, "limit"),
    ],
    ids=["to-last-day", "from-year-10000", "from-year-0", "cursor-after-utc-max", "cursor-before-utc-min",
         "cursor-without-zone", "cursor-not-utf8", "cursor-percent-bytes", "limit-5000-digits", "limit-true"],
)  # fmt: skip
async def test_inbox_parameters_out_of_range_are_a_400_naming_them(
    gateway: Gateway, params: dict[str, str], field: str
) -> None:
    response = await gateway.client.get(
        f"/api/v1/providers/{gateway.provider_id}/inbox", params=params, headers=gateway.provider
    )
    assert response.status_code == 400, response.text
    assert field in response.text


@pytest.mark.parametrize(
    ("date_from", "date_to"), [("0001-01-01", "2030-01-01"), ("2030-01-01", "9999-12-31"), ("2030-01-01", 20300101)]
)
async def test_export_dates_at_the_calendars_ends_are_a_400(
    gateway: Gateway, date_from: str, date_to: str | int
) -> None:
    body = {"kind": "assignments", "date_from": date_from, "date_to": date_to}
    response = await gateway.post("/api/v1/reports/exports", body, gateway.provider)
    assert response.status_code == 400, response.text


async def test_an_idempotency_key_longer_than_its_column_is_a_400(gateway: Gateway) -> None:
    key = "k" * (column_length(Lead.idempotency_key) + 1)
    response = await gateway.client.post(
        "/api/v1/leads",
        json=LEAD | {"external_id": uuid.uuid4().hex},
        headers=gateway.source | {"Idempotency-Key": key},
    )
    assert response.status_code == 400
