"""Passwords stored as argon2 hashes; a malformed stored hash verifies as a wrong password, never an error."""

from __future__ import annotations

import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _nobodys_hash() -> str:
    # Made with the same hasher as every real hash, so verifying against it costs what a real account costs.
    return hash_password(secrets.token_urlsafe(32))


def verify_nobody(password: str) -> bool:
    """For an account that does not exist: the work of a real verification, so the time taken does not tell
    whether an email address has an account. Always False."""
    verify_password(_nobodys_hash(), password)
    return False
