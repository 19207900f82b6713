"""The console's HTTP edge, in process: every page but the login needs a session, every state change a CSRF token,
every answer the strict headers, and the login shares the gateway's throttle."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import AsyncIterator

import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from dlq_service.main import build
from dlq_service.settings import Settings
from libs.ratelimit import RateLimiter
from libs.telemetry import setup_telemetry
from tests.services.conftest import settings_for

Client = AsyncTestClient[Litestar]
PUBLIC = {("GET", "/console/login"), ("POST", "/console/login"), ("POST", "/console/logout"),
          ("GET", "/console/static/{file_path:path}"), ("HEAD", "/console/static/{file_path:path}")}  # fmt: skip
LIMIT = 3


def app_for(service_env: dict[str, str]) -> Litestar:
    settings = settings_for(Settings, service_env, dlq_retry_signing_key=secrets.token_urlsafe(40),
                            login_attempts_per_minute=LIMIT)  # fmt: skip
    return build(settings, setup_telemetry(settings.service_name))[0]


@pytest.fixture(scope="module")
async def client(service_env: dict[str, str]) -> AsyncIterator[Client]:
    async with AsyncTestClient(app_for(service_env)) as client:
        client.follow_redirects = False
        yield client


def console_routes(app: Litestar) -> list[tuple[str, str]]:
    return sorted(
        (method, route.path)
        for route in app.routes
        if isinstance(route, HTTPRoute) and route.path.startswith("/console")
        for method in route.methods
        if method != "OPTIONS"
    )


def concrete(path: str) -> str:
    return re.sub(r"\{\w+:uuid\}", str(uuid.uuid4()), re.sub(r"\{\w+:str\}", "dlq-cleanup", path))


async def csrf_token(client: Client) -> str:
    page = await client.get("/console/login")
    found = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def test_every_console_route_but_the_login_sends_a_caller_without_a_session_to_the_login(
    client: Client,
) -> None:
    token = await csrf_token(client)
    guarded = [route for route in console_routes(client.app) if route not in PUBLIC]
    assert len(guarded) >= 18
    for method, path in guarded:
        data = {"_csrf_token": token} if method == "POST" else None
        response = await client.request(method, concrete(path), data=data)
        assert response.status_code == 303, (method, path, response.status_code)
        assert response.headers["location"].startswith("/console/login"), (method, path)


async def test_a_state_change_without_the_csrf_token_is_refused_before_anything_else(client: Client) -> None:
    for path in ("/console/login", f"/console/dead-letters/{uuid.uuid4()}/retry", "/console/jobs/dlq-cleanup/pause"):
        response = await client.post(path, data={"email": "a@example.com"})
        assert response.status_code == 403, path
        assert "CSRF" in response.text


async def test_every_console_answer_carries_the_strict_headers(client: Client) -> None:
    answers = [await client.get("/console/login"), await client.get("/console/"), await client.post("/console/logout"),
               await client.get("/console/static/console.css")]  # fmt: skip
    for response in answers:
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"


async def test_the_console_is_not_in_the_openapi_schema(client: Client) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith("/console")]


async def test_console_logins_count_in_the_gateways_throttle(client: Client, database_url: str) -> None:
    token = await csrf_token(client)
    email = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    attempt = {"email": email, "password": "wrong", "totp_code": "123456", "_csrf_token": token}
    answers = [(await client.post("/console/login", data=attempt)).status_code for _ in range(LIMIT + 1)]
    assert answers == [401] * LIMIT + [429]
    engine = create_async_engine(database_url)
    # The gateway's own limiter: scope "login", key email|client address.
    gateway = RateLimiter(engine, "login", LIMIT)
    assert await gateway.retry_after(f"{email}|testclient") is not None
    await engine.dispose()


async def test_cookies_are_marked_secure_over_https(service_env: dict[str, str]) -> None:
    async with AsyncTestClient(app_for(service_env), base_url="https://console.example") as client:
        response = await client.get("/console/login")
    cookies = response.headers.get_list("set-cookie")
    assert cookies
    assert all("Secure" in cookie for cookie in cookies)
