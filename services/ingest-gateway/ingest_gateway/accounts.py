"""Who is calling: users logging in (password + TOTP used once) and lead sources presenting an API key."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col

from libs.auth import Principal, Role, hash_password, matching_totp_step, new_totp_secret, verify_password
from libs.db.tables import LeadSource, User, UserRole

ROLES: dict[UserRole, Role] = {UserRole.admin: "admin", UserRole.provider: "provider"}


class AuthenticatedSource(SQLModel):
    """A lead source that presented a key it holds."""

    id: uuid.UUID
    name: str
    trusted: bool


# Every lead submission runs this lookup first: built once, executed with the key's hash.
_SOURCE_BY_KEY = select(*(col(getattr(LeadSource, name)) for name in AuthenticatedSource.model_fields)).where(
    col(LeadSource.api_key_hash) == bindparam("api_key_hash")
)


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return "fmhl_" + secrets.token_urlsafe(32)


async def lead_source_for(engine: AsyncEngine, api_key: str) -> AuthenticatedSource | None:
    async with engine.connect() as connection:
        row = (await connection.execute(_SOURCE_BY_KEY, {"api_key_hash": hash_api_key(api_key)})).first()
    return None if row is None else AuthenticatedSource.model_validate(row._mapping)


async def login(engine: AsyncEngine, email: str, password: str, totp_code: str | None) -> Principal | None:
    """A principal when the password (and the code, if given) is right; None otherwise, whatever was wrong."""
    async with engine.begin() as connection:
        user = (
            await connection.execute(
                select(
                    col(User.id), col(User.role), col(User.password_hash), col(User.totp_secret), col(User.provider_id)
                ).where(col(User.email) == email.lower())
            )
        ).first()
        if user is None or not verify_password(user.password_hash, password):
            return None
        amr = ["pwd"]
        if totp_code is not None:
            step = None if user.totp_secret is None else matching_totp_step(user.totp_secret, totp_code)
            if step is None:
                return None
            # A code is accepted once: only a step later than the last one used moves the marker.
            used = await connection.scalar(
                update(User)
                .where(
                    col(User.id) == user.id,
                    or_(col(User.totp_last_used_step).is_(None), col(User.totp_last_used_step) < step),
                )
                .values(totp_last_used_step=step)
                .returning(col(User.id))
            )
            if used is None:
                return None
            amr.append("otp")
    return Principal(subject=str(user.id), role=ROLES[user.role], provider_id=user.provider_id, amr=tuple(amr))


async def create_user(
    engine: AsyncEngine, email: str, role: str, password: str, provider_id: uuid.UUID | None, with_totp: bool
) -> tuple[uuid.UUID, str | None]:
    """The new user's id and, when it has one, its TOTP secret (shown once, as an otpauth:// URI)."""
    secret = new_totp_secret() if with_totp else None
    async with engine.begin() as connection:
        user_id = (
            await connection.execute(
                insert(User).returning(col(User.id)),
                {
                    "email": email.lower(),
                    "role": UserRole(role),
                    "password_hash": hash_password(password),
                    "totp_secret": secret,
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
