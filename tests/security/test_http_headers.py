"""Every service's responses: no MIME sniffing, API data never cached, and a /schema page that loads nothing from
anywhere (its own strict Content-Security-Policy allows only its inline style, by hash)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from dlq_service.main import build as build_dlq
from dlq_service.settings import Settings as DlqSettings
from email_worker.main import build as build_email
from email_worker.settings import Settings as EmailSettings
from ingest_gateway.main import build as build_gateway
from ingest_gateway.settings import Settings as GatewaySettings
from libs.telemetry import setup_telemetry
from scheduler.main import build as build_scheduler
from scheduler.settings import Settings as SchedulerSettings
from tests.services.conftest import settings_for

Build = Callable[[Any, Any], tuple[Litestar, Any]]
API_SERVICES: dict[str, tuple[Build, type[Any], str]] = {
    "ingest-gateway": (
        build_gateway,
        GatewaySettings,
        "/api/v1/providers/00000000-0000-0000-0000-000000000000/balance",
    ),
    "dlq-service": (build_dlq, DlqSettings, "/api/v1/admin/queues/dlq"),
    "scheduler": (build_scheduler, SchedulerSettings, "/api/v1/admin/jobs"),
}
Clients = dict[str, AsyncTestClient[Litestar]]


@pytest.fixture(scope="module")
async def clients(service_env: dict[str, str]) -> AsyncIterator[Clients]:
    """Built, not started: none of these requests reaches the database or the broker."""
    builds: dict[str, tuple[Build, type[Any]]] = {
        name: (build, settings_cls) for name, (build, settings_cls, _) in API_SERVICES.items()
    }
    builds["email-worker"] = (build_email, EmailSettings)
    async with AsyncExitStack() as stack:
        clients: Clients = {}
        for name, (build, settings_cls) in builds.items():
            settings = settings_for(settings_cls, service_env)
            app = build(settings, setup_telemetry(settings.service_name))[0]
            clients[name] = await stack.enter_async_context(AsyncTestClient(app, raise_server_exceptions=False))
        yield clients


@pytest.mark.parametrize("service", ["ingest-gateway", "dlq-service", "scheduler", "email-worker"])
@pytest.mark.parametrize("path", ["/health/live", "/metrics", "/no/such/path"])
async def test_no_response_may_be_sniffed_for_another_type(clients: Clients, service: str, path: str) -> None:
    response = await clients[service].get(path)
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("service", sorted(API_SERVICES))
async def test_api_answers_are_never_stored_by_a_browser_or_proxy(clients: Clients, service: str) -> None:
    refused = await clients[service].get(API_SERVICES[service][2])
    assert refused.status_code == 401
    assert refused.headers["cache-control"] == "no-store"
    assert refused.headers["x-content-type-options"] == "nosniff"


async def test_a_token_request_is_answered_with_no_store(clients: Clients) -> None:
    response = await clients["ingest-gateway"].post("/api/v1/auth/token", json={})
    assert response.status_code == 400
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("service", sorted(API_SERVICES))
async def test_the_schema_page_loads_nothing_and_allows_only_its_own_style(clients: Clients, service: str) -> None:
    page = await clients[service].get("/schema")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert policy.startswith("default-src 'none';")
    assert "frame-ancestors 'none'" in policy
    assert re.findall(r"(?:src|href)=\"?(?:https?:)?//", page.text) == []
    assert "<script" not in page.text
    [style] = re.findall(r"<style>(.*?)</style>", page.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in policy


@pytest.mark.parametrize("service", sorted(API_SERVICES))
async def test_the_schema_page_lists_the_operations_and_links_the_document(clients: Clients, service: str) -> None:
    page = (await clients[service].get("/schema")).text
    document = (await clients[service].get("/schema/openapi.json")).json()
    for path in document["paths"]:
        assert f"<code>{path}</code>" in page
    assert 'href="/schema/openapi.json"' in page
    yaml = await clients[service].get("/schema/openapi.yaml")
    assert yaml.status_code == 200
    assert yaml.headers["content-security-policy"].startswith("default-src 'none';")


@pytest.mark.parametrize("page", ["/schema/swagger", "/schema/redoc", "/schema/elements", "/schema/rapidoc"])
async def test_no_schema_page_that_loads_a_cdn_is_served(clients: Clients, page: str) -> None:
    assert (await clients["ingest-gateway"].get(page)).status_code == 404


async def test_a_service_without_an_api_serves_no_schema(clients: Clients) -> None:
    assert (await clients["email-worker"].get("/schema/openapi.json")).status_code == 404
