"""The client's address comes from X-Forwarded-For only when the peer is a configured trusted proxy: checked on the
pure rule, and on the gateway served by uvicorn as in production, where the login limit counts per address."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from litestar.connection import ASGIConnection

from ingest_gateway.main import build
from ingest_gateway.settings import Settings
from libs.telemetry import setup_telemetry
from libs.web import Network, client_address, server_config
from tests.services.conftest import settings_for

PROXIES: list[Network] = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


def connection(peer: str, *forwarded: str) -> ASGIConnection[Any, Any, Any, Any]:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return ASGIConnection({"type": "http", "client": (peer, 5000), "headers": headers})  # type: ignore[arg-type]


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert client_address(connection("203.0.113.9", "198.51.100.1"), []) == "203.0.113.9"


def test_a_peer_that_is_not_a_trusted_proxy_cannot_name_another_client() -> None:
    assert client_address(connection("203.0.113.9", "198.51.100.1"), PROXIES) == "203.0.113.9"


def test_behind_a_trusted_proxy_the_address_it_saw_is_the_client() -> None:
    assert client_address(connection("10.1.2.3", "198.51.100.1"), PROXIES) == "198.51.100.1"


def test_what_the_client_wrote_left_of_the_proxys_entry_is_ignored() -> None:
    forged = connection("10.1.2.3", "192.0.2.66, 198.51.100.1")
    assert client_address(forged, PROXIES) == "198.51.100.1"


def test_each_trusted_hop_is_skipped_from_the_right_across_headers() -> None:
    chain = connection("10.1.2.3", "192.0.2.66", "198.51.100.1, 10.9.9.9", "fd00::1")
    assert client_address(chain, PROXIES) == "198.51.100.1"


def test_a_request_through_proxies_only_is_the_nearest_proxys() -> None:
    assert client_address(connection("10.1.2.3", "10.4.5.6"), PROXIES) == "10.1.2.3"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@asynccontextmanager
async def served_gateway(service_env: dict[str, str], trusted_proxies: str) -> AsyncIterator[str]:
    """The gateway under uvicorn with the production server config, on a free port of 127.0.0.1."""
    port = free_port()
    settings = settings_for(Settings, service_env, http_port=port, trusted_proxies=trusted_proxies)
    app = build(settings, setup_telemetry("ingest-gateway-proxies"))[0]
    server = uvicorn.Server(server_config(app, settings))
    serving = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await serving


async def login_statuses(base_url: str, email: str, forwarded_for: list[str]) -> list[int]:
    async with httpx.AsyncClient(base_url=base_url) as client:
        return [
            (
                await client.post(
                    "/api/v1/auth/token",
                    json={"email": email, "password": "wrong password"},
                    headers={"X-Forwarded-For": address},
                )
            ).status_code
            for address in forwarded_for
        ]


FORGED = [f"198.51.100.{n}" for n in range(1, 12)]  # eleven attempts, each claiming another address


@pytest.mark.usefixtures("database_url")
async def test_a_client_cannot_escape_the_login_limit_by_forging_its_address(service_env: dict[str, str]) -> None:
    async with served_gateway(service_env, trusted_proxies="") as base_url:
        statuses = await login_statuses(base_url, f"forger-{uuid.uuid4().hex[:6]}@example.com", FORGED)
    assert statuses == [401] * 10 + [429]


@pytest.mark.usefixtures("database_url")
async def test_behind_a_trusted_proxy_each_client_address_has_its_own_limit(service_env: dict[str, str]) -> None:
    async with served_gateway(service_env, trusted_proxies="127.0.0.1/32") as base_url:
        statuses = await login_statuses(base_url, f"proxied-{uuid.uuid4().hex[:6]}@example.com", FORGED)
    assert statuses == [401] * 11
