"""What a test of a real dlq-service process needs besides the process itself: a port of its own and an admin's
bearer token for the admin API."""

from __future__ import annotations

import socket
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.auth import Principal, Tokens
from tests.conftest import TEST_JWT_SECRET


def free_port() -> int:
    """One the OS picks, so that two runs of a module on one machine do not meet."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def admin_headers(engine: AsyncEngine) -> dict[str, str]:
    """A new admin's bearer token, signed in with a password and a second factor."""
    async with engine.begin() as connection:
        user_id = await connection.scalar(
            text("INSERT INTO users (email, role, password_hash) VALUES (:e, 'admin', '-') RETURNING id"),
            {"e": f"admin-{uuid.uuid4().hex[:8]}@example.com"},
        )
    token = Tokens(TEST_JWT_SECRET, "fmhl-ops", "fmhl-api", 900).issue(
        Principal(subject=str(user_id), role="admin", provider_id=None, amr=("pwd", "otp"))
    )
    return {"Authorization": f"Bearer {token}"}
