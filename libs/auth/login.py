"""Logging a user in with email, password and TOTP code, the one way for every door (the gateway's token route, the
operations console): one throttle count per email and client address shared by all of them, the lockout, a code
used once, and the same cost whether or not the account exists.

An account locks after `threshold` failures in a row: refused like a wrong password, so neither the time nor the
answer tells an attacker which addresses exist or which are locked.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from pydantic import Field, IPvAnyNetwork, field_validator
from pydantic_settings import NoDecode
from sqlalchemy import BigInteger, Integer, Interval, bindparam, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from libs.auth.passwords import verify_nobody, verify_password
from libs.auth.principals import Principal, Role
from libs.auth.totp import TotpSecrets, UnreadableSecret, is_sealed, matching_totp_step
from libs.db.tables import User, UserRole
from libs.logging import get_logger

ROLES: dict[UserRole, Role] = {UserRole.admin: "admin", UserRole.provider: "provider"}
THROTTLE_SCOPE = "login"
"""The rate limiter's scope: every door counts attempts in the same buckets."""
log = get_logger("libs.auth.login")


def throttle_key(email: str, client: str) -> str:
    """Attempts are counted per email address and client address."""
    return f"{email.lower()}|{client}"


class LoginSettingsMixin:
    """Mixed into the settings of every service with a login door; the same defaults everywhere."""

    login_attempts_per_minute: int = Field(
        10, ge=1, le=1000, description="Per email and client address, shared by every replica and every door."
    )
    login_lockout_threshold: int = Field(
        5, ge=1, le=100, description="Failed logins in a row that lock an account (an admin can unlock it)."
    )
    login_lockout_s: int = Field(900, ge=1, le=604_800, description="How long a locked account stays locked.")
    trusted_proxies: Annotated[tuple[IPvAnyNetwork, ...], NoDecode] = Field(
        (),
        description="Comma-separated CIDRs of the reverse proxies in front of the service: only from these is "
        "X-Forwarded-For believed for the client address (none by default).",
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value


@dataclass(frozen=True)
class Lockout:
    """`threshold` failed logins in a row lock an account for `duration`, or until an admin unlocks it."""

    threshold: int
    duration: timedelta

    @classmethod
    def from_settings(cls, settings: LoginSettingsMixin) -> Lockout:
        return cls(settings.login_lockout_threshold, timedelta(seconds=settings.login_lockout_s))


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
_STEP = bindparam("step", type_=BigInteger())
# A code is accepted once: only a step later than the last one used moves the marker.
_USE_STEP = (
    update(User)
    .where(
        col(User.id) == bindparam("user"),
        or_(col(User.totp_last_used_step).is_(None), col(User.totp_last_used_step) < _STEP),
    )
    .values(totp_last_used_step=_STEP)
    .returning(col(User.id))
)


async def login(
    engine: AsyncEngine, totp: TotpSecrets, lockout: Lockout, email: str, password: str, totp_code: str | None
) -> Principal | None:
    """A principal when the account is not locked and the password (and the code, if given) is right: `amr` holds
    `pwd`, and `otp` when a code was given. None otherwise, whatever was wrong; each failure counts towards the
    account's lockout."""
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
    used = await connection.scalar(_USE_STEP, {"user": user_id, "step": step})
    if used is not None and not is_sealed(stored):
        await connection.execute(_SEAL_SECRET, {"user": user_id, "sealed": totp.seal(secret)})
    return used is not None
