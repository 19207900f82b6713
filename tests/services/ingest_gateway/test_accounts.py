"""Logins on the real database: the lockout counts failures in a row and ends by itself, the CLI unlocks (audited)
and seals secrets stored in the clear."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from ingest_gateway.accounts import create_user
from libs.auth import TotpSecrets, is_sealed
from libs.auth.login import Lockout, login
from libs.db.tables import AuditEntry, User
from tests.conftest import TEST_TOTP_ENCRYPTION_KEY

PASSWORD = "correct horse battery staple"
TOTP = TotpSecrets.from_keys(TEST_TOTP_ENCRYPTION_KEY)
THREE_STRIKES = Lockout(threshold=3, duration=timedelta(minutes=15))


async def new_user(engine: AsyncEngine, *, with_totp: bool = False) -> tuple[str, str | None]:
    email = f"user-{uuid.uuid4().hex[:8]}@example.com"
    _, secret = await create_user(engine, email, "admin", PASSWORD, None, with_totp, totp=TOTP)
    return email, secret


async def attempt(engine: AsyncEngine, email: str, password: str, lockout: Lockout = THREE_STRIKES) -> bool:
    return await login(engine, TOTP, lockout, email, password, None) is not None


async def test_failures_in_a_row_lock_the_account(engine: AsyncEngine) -> None:
    email, _ = await new_user(engine)
    assert [await attempt(engine, email, "wrong") for _ in range(3)] == [False] * 3
    assert not await attempt(engine, email, PASSWORD)


async def test_a_success_starts_the_count_again(engine: AsyncEngine) -> None:
    email, _ = await new_user(engine)
    for _ in range(2):
        await attempt(engine, email, "wrong")
    assert await attempt(engine, email, PASSWORD)
    for _ in range(2):
        await attempt(engine, email, "wrong")
    assert await attempt(engine, email, PASSWORD)


async def test_a_wrong_or_replayed_code_counts_as_a_failure(engine: AsyncEngine) -> None:
    email, secret = await new_user(engine, with_totp=True)
    assert secret is not None
    code = pyotp.TOTP(secret).now()
    assert await login(engine, TOTP, THREE_STRIKES, email, PASSWORD, code) is not None
    for wrong in (code, "000000", code):
        assert await login(engine, TOTP, THREE_STRIKES, email, PASSWORD, wrong) is None
    assert not await attempt(engine, email, PASSWORD)


async def test_attempts_on_a_locked_account_do_not_prolong_its_lock(engine: AsyncEngine) -> None:
    email, _ = await new_user(engine)
    for _ in range(3):
        await attempt(engine, email, "wrong")
    locked_until = await locked_until_of(engine, email)
    for _ in range(3):
        await attempt(engine, email, "wrong")
    assert await locked_until_of(engine, email) == locked_until


async def test_a_lock_ends_by_itself_after_its_duration(engine: AsyncEngine) -> None:
    brief = Lockout(threshold=2, duration=timedelta(seconds=2))
    email, _ = await new_user(engine)
    for _ in range(2):
        await attempt(engine, email, "wrong", brief)
    assert not await attempt(engine, email, PASSWORD, brief)
    async with asyncio.timeout(20):
        while not await attempt(engine, email, PASSWORD, brief):
            await asyncio.sleep(0.2)


async def locked_until_of(engine: AsyncEngine, email: str) -> object:
    async with engine.connect() as connection:
        return await connection.scalar(select(col(User.locked_until)).where(col(User.email) == email))


def cli(database_url: str, *arguments: str, key: str = TEST_TOTP_ENCRYPTION_KEY) -> subprocess.CompletedProcess[str]:
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DATABASE_URL": database_url,
        "RABBITMQ_URL": "amqp://fmhl:unused-by-the-cli@127.0.0.1:1/none",
        "TOTP_ENCRYPTION_KEY": key,
    }
    return subprocess.run(
        [sys.executable, "-m", "ingest_gateway.cli", *arguments],
        env=environment, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


async def test_the_cli_unlocks_an_account_and_it_is_audited(engine: AsyncEngine, database_url: str) -> None:
    email, _ = await new_user(engine)
    for _ in range(3):
        await attempt(engine, email, "wrong")
    result = await asyncio.to_thread(cli, database_url, "unlock-user", "--email", email)
    assert result.returncode == 0, result.stderr
    assert await attempt(engine, email, PASSWORD)
    async with engine.connect() as connection:
        user_id = await connection.scalar(select(col(User.id)).where(col(User.email) == email))
        actions = (
            await connection.scalars(select(col(AuditEntry.action)).where(col(AuditEntry.entity_id) == str(user_id)))
        ).all()
    assert actions == ["user.unlocked"]


async def test_the_cli_says_so_when_no_user_has_the_email(database_url: str) -> None:
    result = await asyncio.to_thread(cli, database_url, "unlock-user", "--email", "nobody-at-all@example.com")
    assert result.returncode == 1
    assert "no user" in result.stdout


async def test_the_cli_seals_every_secret_stored_in_the_clear(engine: AsyncEngine, database_url: str) -> None:
    email, _ = await new_user(engine)
    plain = pyotp.random_base32()
    async with engine.begin() as connection:
        await connection.execute(update(User).where(col(User.email) == email).values(totp_secret=plain))
    result = await asyncio.to_thread(cli, database_url, "seal-totp-secrets")
    assert result.returncode == 0, result.stderr
    async with engine.connect() as connection:
        stored = await connection.scalar(select(col(User.totp_secret)).where(col(User.email) == email))
        remaining = (
            await connection.scalars(select(col(User.totp_secret)).where(col(User.totp_secret).is_not(None)))
        ).all()
    assert isinstance(stored, str)
    assert TOTP.open(stored) == plain
    assert [secret for secret in remaining if secret is not None and not is_sealed(secret)] == []


@pytest.mark.parametrize("key", ["", "changeme", "not-a-fernet-key"])
def test_the_cli_refuses_to_start_without_a_valid_key(database_url: str, key: str) -> None:
    result = cli(database_url, "seal-totp-secrets", key=key)
    assert result.returncode == 78
    assert "TOTP_ENCRYPTION_KEY" in result.stderr
