"""Who is calling: users logging in (password + TOTP used once) and lead sources presenting an API key."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.auth import Principal, matching_totp_step, verify_password


@dataclass(frozen=True)
class LeadSource:
    id: uuid.UUID
    name: str
    trusted: bool


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return "fmhl_" + secrets.token_urlsafe(32)


async def lead_source_for(engine: AsyncEngine, api_key: str) -> LeadSource | None:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT id, name, trusted FROM lead_sources WHERE api_key_hash = :hash"),
                {"hash": hash_api_key(api_key)},
            )
        ).first()
    return None if row is None else LeadSource(row.id, row.name, row.trusted)


async def login(engine: AsyncEngine, email: str, password: str, totp_code: str | None) -> Principal | None:
    """A principal when the password (and the code, if given) is right; None otherwise, whatever was wrong."""
    async with engine.begin() as connection:
        user = (
            await connection.execute(
                text("SELECT id, role, password_hash, totp_secret, provider_id FROM users WHERE email = :email"),
                {"email": email.lower()},
            )
        ).first()
        if user is None or not verify_password(user.password_hash, password):
            return None
        amr = ["pwd"]
        if totp_code is not None:
            if user.totp_secret is None:
                return None
            step = matching_totp_step(user.totp_secret, totp_code)
            # A code is accepted once: only a step later than the last one used moves the marker.
            used = await connection.execute(
                text(
                    "UPDATE users SET totp_last_used_step = :step WHERE id = :id "
                    "AND (totp_last_used_step IS NULL OR totp_last_used_step < :step)"
                ),
                {"step": step, "id": user.id},
            )
            if step is None or used.rowcount != 1:
                return None
            amr.append("otp")
    return Principal(subject=str(user.id), role=user.role, provider_id=user.provider_id, amr=tuple(amr))
