"""Authentication shared by every API: argon2 passwords, TOTP used once, short-lived JWTs verified strictly."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import jwt
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from pydantic import Field, SecretStr, field_validator

from libs.settings import refuse_placeholder

Role = Literal["admin", "provider"]
ALGORITHM = "HS256"
_hasher = PasswordHasher()


class AuthSettingsMixin:
    """Mixed into the settings of every service that verifies tokens."""

    jwt_secret: SecretStr = Field(min_length=32, description="HMAC key for tokens, at least 32 characters.")
    jwt_issuer: str = Field("fmhl-ops", description="`iss` of issued tokens, required when verifying.")
    jwt_audience: str = Field("fmhl-api", description="`aud` of issued tokens, required when verifying.")
    token_ttl_s: int = Field(900, ge=60, le=86_400, description="Lifetime of an access token.")

    @field_validator("jwt_secret")
    @classmethod
    def _refuse_placeholder_secret(cls, value: SecretStr) -> SecretStr:
        return refuse_placeholder(value)


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    provider_id: uuid.UUID | None
    amr: tuple[str, ...]

    @property
    def has_mfa(self) -> bool:
        return "otp" in self.amr


class Tokens:
    def __init__(self, secret: str, issuer: str, audience: str, ttl_s: int) -> None:
        self._secret = secret
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s

    def issue(self, principal: Principal, *, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {
            "sub": principal.subject,
            "role": principal.role,
            "amr": list(principal.amr),
            "iss": self.issuer,
            "aud": self.audience,
            "iat": issued,
            "exp": issued + self.ttl_s,
            "jti": uuid.uuid4().hex,
        }
        if principal.provider_id is not None:
            claims["provider_id"] = str(principal.provider_id)
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        """Signature, allowed algorithm only (never `none`), and `exp`, `iss`, `aud` all required."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
            role = claims.get("role")
            if role not in ("admin", "provider"):
                raise jwt.InvalidTokenError("unknown role")
            provider_id = uuid.UUID(claims["provider_id"]) if claims.get("provider_id") else None
            amr = tuple(str(method) for method in claims.get("amr", []))
        except (jwt.PyJWTError, ValueError) as error:
            raise NotAuthorizedException(f"invalid token: {error}") from None
        return Principal(subject=str(claims["sub"]), role=role, provider_id=provider_id, amr=amr)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, email: str, issuer: str = "fmhl-ops") -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def matching_totp_step(secret: str, code: str, *, now: float | None = None, window: int = 1) -> int | None:
    """The time step the code belongs to (within ±window steps), or None.

    pyotp's verify() would accept the same code twice; the caller stores the step and accepts only a later one.
    """
    if not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    moment = time.time() if now is None else now
    current = int(moment) // totp.interval
    for step in range(current - window, current + window + 1):
        if pyotp.utils.strings_equal(totp.generate_otp(step), code):
            return step
    return None


def bearer_principal(connection: ASGIConnection[Any, Any, Any, Any], tokens: Tokens) -> Principal:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthorizedException("missing bearer token")
    return tokens.verify(token.strip())


def require_admin(principal: Principal, *, mfa: bool = True) -> None:
    if principal.role != "admin":
        raise PermissionDeniedException("admin role required")
    if mfa and not principal.has_mfa:
        raise PermissionDeniedException("multi-factor authentication required (amr must contain otp)")


def require_provider_or_admin(principal: Principal, provider_id: uuid.UUID) -> None:
    """A provider sees only its own data; an admin sees all."""
    if principal.role == "admin":
        return
    if principal.provider_id != provider_id:
        raise PermissionDeniedException("a provider may only access its own data")


def admin_principal(tokens: Tokens) -> Callable[[Request[Any, Any, Any]], Awaitable[Principal]]:
    """A dependency for admin APIs: the caller, when an admin with MFA; 401 or 403 otherwise."""

    async def principal(request: Request[Any, Any, Any]) -> Principal:
        caller = bearer_principal(request, tokens)
        require_admin(caller, mfa=True)
        return caller

    return principal
