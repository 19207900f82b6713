"""Who is calling: users (created here, unlocked by an admin, their TOTP secrets sealed) and lead sources
presenting an API key. The login itself is `libs.auth.login`, the same for every door."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col

from libs import audit
from libs.auth import TotpSecrets, hash_password, is_sealed, new_totp_secret
from libs.db import retry_on_disconnect
from libs.db.tables import LeadSource, User, UserRole


class AuthenticatedSource(SQLModel):
    """A lead source that presented a key it holds."""

    id: uuid.UUID
    name: str
    trusted: bool


# Every lead submission runs this lookup first: built once, executed with the key's hash.
_SOURCE_BY_KEY = select(*(col(getattr(LeadSource, name)) for name in AuthenticatedSource.model_fields)).where(
    col(LeadSource.api_key_hash) == bindparam("api_key_hash")
)
_SEAL_SECRET = update(User).where(col(User.id) == bindparam("user")).values(totp_secret=bindparam("sealed"))


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return "fmhl_" + secrets.token_urlsafe(32)


async def lead_source_for(engine: AsyncEngine, api_key: str) -> AuthenticatedSource | None:
    async def lookup() -> AuthenticatedSource | None:
        async with engine.connect() as connection:
            row = (await connection.execute(_SOURCE_BY_KEY, {"api_key_hash": hash_api_key(api_key)})).first()
        return None if row is None else AuthenticatedSource.model_validate(row._mapping)

    return await retry_on_disconnect(lookup)


class SourceKeys:
    """Lead sources by API key, each known key remembered for `ttl_s`: a key revoked or a source changed in the
    database is honoured by every process within that time. Unknown keys are never remembered (a caller trying
    keys cannot fill the memory), and at most `capacity` known keys are. Concurrent requests with a key that is
    not remembered share one lookup: when a busy source's key expires, its requests in flight (64 in the
    benchmark) would otherwise each look it up at once, each on a connection of its own."""

    def __init__(
        self, engine: AsyncEngine, ttl_s: float, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self.capacity = capacity
        self.clock = clock
        self._known: dict[str, tuple[float, AuthenticatedSource]] = {}
        self._looking_up: dict[str, asyncio.Task[AuthenticatedSource | None]] = {}

    async def source_for(self, api_key: str) -> AuthenticatedSource | None:
        remembered = self._known.get(api_key)
        if remembered is not None and remembered[0] > self.clock():
            return remembered[1]
        lookup = self._looking_up.get(api_key)
        if lookup is None:
            lookup = self._looking_up[api_key] = asyncio.create_task(self._look_up(api_key))
            lookup.add_done_callback(lambda _: self._looking_up.pop(api_key, None))
        # Shielded: a request that goes away does not cancel the lookup the others wait for.
        return await asyncio.shield(lookup)

    async def _look_up(self, api_key: str) -> AuthenticatedSource | None:
        now = self.clock()  # before reading: the key is remembered for ttl_s from what the database said then
        source = await lead_source_for(self.engine, api_key)
        if source is None:
            self._known.pop(api_key, None)
            return None
        if len(self._known) >= self.capacity:
            self._known = {key: entry for key, entry in self._known.items() if entry[0] > now}
            if len(self._known) >= self.capacity:
                self._known.clear()
        self._known[api_key] = (now + self.ttl_s, source)
        return source


async def unlock(engine: AsyncEngine, email: str, actor: str) -> uuid.UUID | None:
    """Clears the account's lock and failure count (audited as user.unlocked); None when there is no such user."""
    async with engine.begin() as connection:
        user_id: uuid.UUID | None = await connection.scalar(
            update(User)
            .where(col(User.email) == email.lower())
            .values(failed_logins=0, locked_until=None)
            .returning(col(User.id))
        )
        if user_id is not None:
            await audit.record(
                connection, actor=actor, action="user.unlocked", entity_type="user", entity_id=str(user_id)
            )
    return user_id


async def seal_plain_secrets(engine: AsyncEngine, totp: TotpSecrets) -> int:
    """Seals every TOTP secret still stored in the clear (from before sealing); the number sealed."""
    async with engine.begin() as connection:
        stored = (
            await connection.execute(
                select(col(User.id), col(User.totp_secret)).where(col(User.totp_secret).is_not(None)).with_for_update()
            )
        ).all()
        plain = [row for row in stored if row.totp_secret is not None and not is_sealed(row.totp_secret)]
        for row in plain:
            await connection.execute(_SEAL_SECRET, {"user": row.id, "sealed": totp.seal(row.totp_secret)})
    return len(plain)


async def create_user(
    engine: AsyncEngine,
    email: str,
    role: str,
    password: str,
    provider_id: uuid.UUID | None,
    with_totp: bool,
    *,
    totp: TotpSecrets,
) -> tuple[uuid.UUID, str | None]:
    """The new user's id and, when it has one, its TOTP secret (shown once, as an otpauth:// URI; stored sealed)."""
    secret = new_totp_secret() if with_totp else None
    async with engine.begin() as connection:
        user_id = (
            await connection.execute(
                insert(User).returning(col(User.id)),
                {
                    "email": email.lower(),
                    "role": UserRole(role),
                    "password_hash": hash_password(password),
                    "totp_secret": None if secret is None else totp.seal(secret),
                    "provider_id": provider_id,
                },
            )
        ).scalar_one()
    return user_id, secret


async def create_lead_source(engine: AsyncEngine, name: str, trusted: bool) -> tuple[uuid.UUID, str]:
    """The new source's id and its API key: only the key's hash is stored, so this is the one time it is seen."""
    api_key = new_api_key()
    async with engine.begin() as connection:
        source_id = (
            await connection.execute(
                insert(LeadSource).returning(col(LeadSource.id)),
                {"name": name, "api_key_hash": hash_api_key(api_key), "trusted": trusted},
            )
        ).scalar_one()
    return source_id, api_key
