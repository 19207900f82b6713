"""Who is calling: users logging in (password + TOTP used once) and lead sources presenting an API key.

A login costs the same whether or not the email address has an account (a password hash is verified either
way), and an account locks after `threshold` failures in a row: refused like a wrong password, so neither the
time nor the answer tells an attacker which addresses exist or which are locked.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Integer, Interval, bindparam, case, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import SQLModel, col

from libs import audit
from libs.auth import (
    Principal,
    Role,
    TotpSecrets,
    UnreadableSecret,
    hash_password,
    is_sealed,
    matching_totp_step,
    new_totp_secret,
    verify_nobody,
    verify_password,
)
from libs.db.tables import LeadSource, User, UserRole
from libs.logging import get_logger

ROLES: dict[UserRole, Role] = {UserRole.admin: "admin", UserRole.provider: "provider"}
log = get_logger("ingest_gateway.auth")


class AuthenticatedSource(SQLModel):
    """A lead source that presented a key it holds."""

    id: uuid.UUID
    name: str
    trusted: bool


@dataclass(frozen=True)
class Lockout:
    """`threshold` failed logins in a row lock an account for `duration`, or until an admin unlocks it."""

    threshold: int
    duration: timedelta


# Every lead submission runs this lookup first: built once, executed with the key's hash.
_SOURCE_BY_KEY = select(*(col(getattr(LeadSource, name)) for name in AuthenticatedSource.model_fields)).where(
    col(LeadSource.api_key_hash) == bindparam("api_key_hash")
)
_USER_BY_EMAIL = select(
    col(User.id),
    col(User.role),
    col(User.password_hash),
    col(User.totp_secret),
    col(User.provider_id),
    col(User.failed_logins),
    func.coalesce(col(User.locked_until) > func.now(), False).label("locked"),
).where(col(User.email) == bindparam("email"))
_FAILURES_AFTER_THIS = col(User.failed_logins) + 1
_THRESHOLD = bindparam("threshold", type_=Integer())
_REACHES_THRESHOLD = _FAILURES_AFTER_THIS >= _THRESHOLD
# One statement, so concurrent failures each count: the one that reaches the threshold locks and restarts the count.
_RECORD_FAILURE = (
    update(User)
    .where(col(User.id) == bindparam("user"))
    .values(
        failed_logins=case((_REACHES_THRESHOLD, 0), else_=_FAILURES_AFTER_THIS),
        locked_until=case(
            # clock_timestamp(): the lock runs from this failure, whenever its transaction began.
            (_REACHES_THRESHOLD, func.clock_timestamp() + bindparam("duration", type_=Interval())),
            else_=col(User.locked_until),
        ),
    )
    .returning(col(User.locked_until))
)
_RECORD_SUCCESS = update(User).where(col(User.id) == bindparam("user")).values(failed_logins=0)
_SEAL_SECRET = update(User).where(col(User.id) == bindparam("user")).values(totp_secret=bindparam("sealed"))


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return "fmhl_" + secrets.token_urlsafe(32)


async def lead_source_for(engine: AsyncEngine, api_key: str) -> AuthenticatedSource | None:
    async with engine.connect() as connection:
        row = (await connection.execute(_SOURCE_BY_KEY, {"api_key_hash": hash_api_key(api_key)})).first()
    return None if row is None else AuthenticatedSource.model_validate(row._mapping)


async def login(
    engine: AsyncEngine, totp: TotpSecrets, lockout: Lockout, email: str, password: str, totp_code: str | None
) -> Principal | None:
    """A principal when the account is not locked and the password (and the code, if given) is right; None
    otherwise, whatever was wrong. Each failure counts towards the account's lockout."""
    async with engine.connect() as connection:
        user = (await connection.execute(_USER_BY_EMAIL, {"email": email.lower()})).first()
    # The hash is verified holding no pooled connection: a burst of logins must not starve the other routes.
    if user is None:
        verify_nobody(password)
        return None
    password_ok = verify_password(user.password_hash, password)
    if user.locked:
        # Not counted: a locked account's lock is not prolonged by whoever keeps knocking.
        log.warn("auth.login_while_locked", {"user_id": str(user.id)})
        return None
    amr = ["pwd"]
    async with engine.begin() as connection:
        if password_ok and totp_code is not None:
            if await _use_code(connection, totp, user.id, user.totp_secret, totp_code):
                amr.append("otp")
            else:
                password_ok = False
        if not password_ok:
            locked_until = await connection.scalar(
                _RECORD_FAILURE, {"user": user.id, "threshold": lockout.threshold, "duration": lockout.duration}
            )
            if user.failed_logins + 1 >= lockout.threshold:
                log.warn("auth.account_locked", {"user_id": str(user.id), "until": locked_until})
            return None
        if user.failed_logins:
            await connection.execute(_RECORD_SUCCESS, {"user": user.id})
    return Principal(subject=str(user.id), role=ROLES[user.role], provider_id=user.provider_id, amr=tuple(amr))


async def _use_code(
    connection: AsyncConnection, totp: TotpSecrets, user_id: uuid.UUID, stored: str | None, code: str
) -> bool:
    """The code is right and later than the last one used; a secret still stored in the clear gets sealed."""
    if stored is None:
        return False
    try:
        secret = totp.open(stored)
    except UnreadableSecret as error:
        log.error("auth.totp_secret_unreadable", error, {"user_id": str(user_id)})
        return False
    step = matching_totp_step(secret, code)
    if step is None:
        return False
    # A code is accepted once: only a step later than the last one used moves the marker.
    used = await connection.scalar(
        update(User)
        .where(
            col(User.id) == user_id,
            or_(col(User.totp_last_used_step).is_(None), col(User.totp_last_used_step) < step),
        )
        .values(totp_last_used_step=step)
        .returning(col(User.id))
    )
    if used is not None and not is_sealed(stored):
        await connection.execute(_SEAL_SECRET, {"user": user_id, "sealed": totp.seal(secret)})
    return used is not None


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
