"""Console sessions kept in PostgreSQL: a random token in the browser's cookie, its hash in a row that ends with
logout, an idle timeout or an absolute expiry, and that opens only while its user is still an admin."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Interval, bindparam, delete, func, insert, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from libs.db.tables import ConsoleSession, User, UserRole

_IDLE = bindparam("idle", type_=Interval())
_CREATE = insert(ConsoleSession).values(
    token_hash=bindparam("session_hash"),
    user_id=bindparam("session_user"),
    expires_at=func.now() + bindparam("lifetime", type_=Interval()),
)
# One statement checks the token, both timeouts and the user's role, and moves the idle clock.
_RESUME = (
    update(ConsoleSession)
    .where(
        col(ConsoleSession.token_hash) == bindparam("session_hash"),
        col(ConsoleSession.expires_at) > func.now(),
        col(ConsoleSession.last_seen_at) > func.now() - _IDLE,
        col(User.id) == col(ConsoleSession.user_id),
        col(User.role) == UserRole.admin,
    )
    .values(last_seen_at=func.now())
    .returning(col(ConsoleSession.user_id), col(User.email))
)
_END = delete(ConsoleSession).where(col(ConsoleSession.token_hash) == bindparam("session_hash"))
_SWEEP = delete(ConsoleSession).where(
    (col(ConsoleSession.expires_at) <= func.now()) | (col(ConsoleSession.last_seen_at) <= func.now() - _IDLE)
)


@dataclass(frozen=True)
class SessionUser:
    """The admin a live session belongs to; `subject` is what audit rows and the domain functions call the actor."""

    user_id: uuid.UUID
    email: str

    @property
    def subject(self) -> str:
        return str(self.user_id)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleSessions:
    def __init__(self, engine: AsyncEngine, idle: timedelta, lifetime: timedelta) -> None:
        self.engine = engine
        self.idle = idle
        self.lifetime = lifetime

    async def open(self, user_id: uuid.UUID) -> str:
        """A new session's token (for the cookie; only its hash is stored). Sessions that ended are swept."""
        token = secrets.token_urlsafe(32)
        async with self.engine.begin() as connection:
            await connection.execute(_SWEEP, {"idle": self.idle})
            await connection.execute(
                _CREATE, {"session_hash": token_hash(token), "session_user": user_id, "lifetime": self.lifetime}
            )
        return token

    async def resume(self, token: str) -> SessionUser | None:
        """The session's admin, its idle clock moved; None when it is unknown, ended, idle too long, past its
        expiry, or its user is no longer an admin."""
        async with self.engine.begin() as connection:
            row = (await connection.execute(_RESUME, {"session_hash": token_hash(token), "idle": self.idle})).first()
        return None if row is None else SessionUser(user_id=row.user_id, email=row.email)

    async def close(self, token: str) -> None:
        """Logout: the row goes, so the cookie opens nothing any more, wherever a copy of it is."""
        async with self.engine.begin() as connection:
            await connection.execute(_END, {"session_hash": token_hash(token)})
