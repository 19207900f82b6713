"""Console sessions on the real database: a session opens only for its admin, and ends with logout, the idle
timeout, the absolute expiry, or its user's admin role."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import col

from dlq_service.sessions import ConsoleSessions, token_hash
from ingest_gateway.accounts import create_user
from libs.auth import TotpSecrets
from libs.db.tables import ConsoleSession, User, UserRole
from tests.conftest import TEST_TOTP_ENCRYPTION_KEY


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> ConsoleSessions:
    return ConsoleSessions(engine, idle=timedelta(minutes=15), lifetime=timedelta(hours=8))


async def admin(engine: AsyncEngine) -> uuid.UUID:
    user_id, _ = await create_user(engine, f"admin-{uuid.uuid4().hex[:8]}@example.com", "admin", "pw", None, True,
                                   totp=TotpSecrets.from_keys(TEST_TOTP_ENCRYPTION_KEY))  # fmt: skip
    return user_id


async def age(engine: AsyncEngine, token: str, **moved: timedelta) -> None:
    """Moves a session's clocks into the past instead of waiting for them."""
    values = {name: func.now() - delta for name, delta in moved.items()}
    async with engine.begin() as connection:
        await connection.execute(
            update(ConsoleSession).where(col(ConsoleSession.token_hash) == token_hash(token)).values(**values)
        )


async def test_an_open_session_names_its_admin(engine: AsyncEngine, sessions: ConsoleSessions) -> None:
    user_id = await admin(engine)
    resumed = await sessions.resume(await sessions.open(user_id))
    assert resumed is not None
    assert resumed.user_id == user_id


async def test_only_the_hash_of_the_token_is_stored(engine: AsyncEngine, sessions: ConsoleSessions) -> None:
    token = await sessions.open(await admin(engine))
    async with engine.connect() as connection:
        stored = await connection.scalar(
            func.count().select().where(col(ConsoleSession.token_hash).in_([token, token_hash(token)]))
        )
    assert stored == 1
    assert await sessions.resume(token_hash(token)) is None


async def test_a_session_ends_with_logout(engine: AsyncEngine, sessions: ConsoleSessions) -> None:
    token = await sessions.open(await admin(engine))
    await sessions.close(token)
    assert await sessions.resume(token) is None


async def test_a_session_unused_for_the_idle_timeout_is_over(engine: AsyncEngine, sessions: ConsoleSessions) -> None:
    token = await sessions.open(await admin(engine))
    await age(engine, token, last_seen_at=timedelta(minutes=16))
    assert await sessions.resume(token) is None


async def test_using_a_session_keeps_it_from_idling_out(engine: AsyncEngine, sessions: ConsoleSessions) -> None:
    token = await sessions.open(await admin(engine))
    await age(engine, token, last_seen_at=timedelta(minutes=14))
    assert await sessions.resume(token) is not None
    await age(engine, token, last_seen_at=timedelta(minutes=14))
    assert await sessions.resume(token) is not None


async def test_a_session_ends_at_its_absolute_expiry_however_active(
    engine: AsyncEngine, sessions: ConsoleSessions
) -> None:
    token = await sessions.open(await admin(engine))
    await age(engine, token, expires_at=timedelta(seconds=1))
    assert await sessions.resume(token) is None


async def test_a_session_ends_when_its_user_is_no_longer_an_admin(
    engine: AsyncEngine, sessions: ConsoleSessions
) -> None:
    user_id = await admin(engine)
    token = await sessions.open(user_id)
    async with engine.begin() as connection:
        await connection.execute(update(User).where(col(User.id) == user_id).values(role=UserRole.provider))
    assert await sessions.resume(token) is None
