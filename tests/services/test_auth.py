"""Tokens are verified strictly, admin routes need the role and MFA, a TOTP code works once."""

from __future__ import annotations

import base64
import time
import uuid

import jwt
import orjson
import pyotp
from sqlalchemy import select
from sqlmodel import col

from ingest_gateway.accounts import create_user
from libs.auth import Principal, Tokens
from libs.db.tables import AuditEntry
from tests.conftest import TEST_JWT_SECRET
from tests.services.conftest import PASSWORD, Pipeline

ADMIN_ROUTE = "/api/v1/providers"
NEW_PROVIDER = {"name": "P", "email": "p@example.com"}


def tokens(secret: str = TEST_JWT_SECRET) -> Tokens:
    return Tokens(secret, "fmhl-ops", "fmhl-api", 900)


def admin(amr: tuple[str, ...] = ("pwd", "otp")) -> Principal:
    return Principal(subject=str(uuid.uuid4()), role="admin", provider_id=None, amr=amr)


async def status_with(pipeline: Pipeline, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return (await pipeline.gateway.post(ADMIN_ROUTE, json=NEW_PROVIDER, headers=headers)).status_code


async def test_no_token_is_401(pipeline: Pipeline) -> None:
    assert await status_with(pipeline, None) == 401


async def test_an_expired_token_is_401(pipeline: Pipeline) -> None:
    assert await status_with(pipeline, tokens().issue(admin(), now=time.time() - 3600)) == 401


async def test_a_token_signed_with_another_key_is_401(pipeline: Pipeline) -> None:
    forged = tokens("another-signing-key-that-is-long-enough").issue(admin())
    assert await status_with(pipeline, forged) == 401


async def test_an_unsigned_alg_none_token_is_401(pipeline: Pipeline) -> None:
    claims = jwt.decode(tokens().issue(admin()), options={"verify_signature": False})

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    unsigned = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
    assert await status_with(pipeline, unsigned) == 401


async def test_a_token_without_exp_is_401(pipeline: Pipeline) -> None:
    claims = {"sub": "x", "role": "admin", "amr": ["pwd", "otp"], "iss": "fmhl-ops", "aud": "fmhl-api",
              "iat": int(time.time())}  # fmt: skip
    assert await status_with(pipeline, jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")) == 401


async def test_an_admin_without_mfa_is_403(pipeline: Pipeline) -> None:
    assert await status_with(pipeline, tokens().issue(admin(amr=("pwd",)))) == 403


async def test_a_provider_on_an_admin_route_is_403(pipeline: Pipeline) -> None:
    provider = Principal(subject=str(uuid.uuid4()), role="provider", provider_id=uuid.uuid4(), amr=("pwd", "otp"))
    assert await status_with(pipeline, tokens().issue(provider)) == 403


async def test_a_provider_cannot_read_another_providers_inbox(pipeline: Pipeline) -> None:
    headers = await pipeline.admin_headers()
    mine = await pipeline.provider(headers, category="c", zips=["11111"], price_cents=1, balance_cents=0)
    theirs = await pipeline.provider(headers, category="c", zips=["11111"], price_cents=1, balance_cents=0)
    provider = await pipeline.provider_headers(mine)
    assert (await pipeline.gateway.get(f"/api/v1/providers/{mine}/inbox", headers=provider)).status_code == 200
    assert (await pipeline.gateway.get(f"/api/v1/providers/{theirs}/inbox", headers=provider)).status_code == 403
    assert (await pipeline.gateway.get(f"/api/v1/providers/{theirs}/balance", headers=provider)).status_code == 403


async def test_a_totp_code_is_accepted_once(pipeline: Pipeline) -> None:
    email = f"once-{uuid.uuid4().hex[:6]}@example.com"
    _, secret = await create_user(pipeline.engine, email, "admin", PASSWORD, None, True, totp=pipeline.totp)
    assert secret is not None
    login = {"email": email, "password": PASSWORD, "totp_code": pyotp.TOTP(secret).now()}
    first = await pipeline.gateway.post("/api/v1/auth/token", json=login)
    replay = await pipeline.gateway.post("/api/v1/auth/token", json=login)
    assert first.status_code == 200
    assert first.json()["amr"] == ["pwd", "otp"]
    assert replay.status_code == 401


async def test_a_wrong_password_or_code_is_401_and_says_nothing_more(pipeline: Pipeline) -> None:
    email = f"wrong-{uuid.uuid4().hex[:6]}@example.com"
    await create_user(pipeline.engine, email, "admin", PASSWORD, None, True, totp=pipeline.totp)
    bad_password = await pipeline.gateway.post("/api/v1/auth/token", json={"email": email, "password": "nope"})
    bad_code = await pipeline.gateway.post(
        "/api/v1/auth/token", json={"email": email, "password": PASSWORD, "totp_code": "000000"}
    )
    assert bad_password.status_code == bad_code.status_code == 401
    assert bad_password.json()["detail"] == bad_code.json()["detail"]


async def test_login_attempts_are_rate_limited(pipeline: Pipeline) -> None:
    email = f"flood-{uuid.uuid4().hex[:6]}@example.com"
    codes = [
        (await pipeline.gateway.post("/api/v1/auth/token", json={"email": email, "password": "x"})).status_code
        for _ in range(12)
    ]
    assert codes[:10] == [401] * 10
    assert codes[10:] == [429, 429]


async def test_admin_actions_are_audited(pipeline: Pipeline) -> None:
    headers = await pipeline.admin_headers()
    provider_id = await pipeline.provider(headers, category="c", zips=["11111"], price_cents=1, balance_cents=500)
    async with pipeline.engine.connect() as connection:
        audited = await connection.execute(
            select(col(AuditEntry.action), col(AuditEntry.actor))
            .where(col(AuditEntry.entity_id) == str(provider_id))
            .order_by(col(AuditEntry.id))
        )
        entries = [(entry.action, entry.actor) for entry in audited]
    claims = jwt.decode(headers["Authorization"].removeprefix("Bearer "), options={"verify_signature": False})
    assert entries == [("provider.created", claims["sub"]), ("balance.topped_up", claims["sub"])]
