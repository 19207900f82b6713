"""Short-lived JWT access tokens: issued with every claim a verifier requires, verified strictly."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
from litestar.exceptions import NotAuthorizedException
from pydantic import Field, SecretStr, field_validator

from libs.auth.principals import Principal
from libs.settings import refuse_placeholder

ALGORITHM = "HS256"
REMEMBERED_TOKENS = 4096
"""Verified tokens a process keeps at most (each until its `exp`); when full, the expired go, else all."""


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


class Tokens:
    def __init__(self, secret: str, issuer: str, audience: str, ttl_s: int) -> None:
        self._secret = secret
        self.issuer = issuer
        self.audience = audience
        self.ttl_s = ttl_s
        self._verified: dict[str, tuple[Principal, int]] = {}

    @classmethod
    def from_settings(cls, settings: AuthSettingsMixin) -> Tokens:
        secret = settings.jwt_secret.get_secret_value()
        return cls(secret, settings.jwt_issuer, settings.jwt_audience, settings.token_ttl_s)

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
        """Signature, allowed algorithm only (never `none`), and `exp`, `iss`, `aud` all required.

        A token verified once is remembered until its `exp`: verifying it again would decide the same until
        then (its signature, issuer and audience cannot change, and a bearer token has no revocation but its
        expiry), and costs a tenth of a millisecond per request. Refused tokens are not remembered."""
        remembered = self._verified.get(token)
        if remembered is not None and time.time() < remembered[1]:
            return remembered[0]
        principal, expires = self._verified_now(token)
        if len(self._verified) >= REMEMBERED_TOKENS:
            now = time.time()
            self._verified = {known: entry for known, entry in self._verified.items() if now < entry[1]}
            if len(self._verified) >= REMEMBERED_TOKENS:
                self._verified.clear()
        self._verified[token] = (principal, expires)
        return principal

    def _verified_now(self, token: str) -> tuple[Principal, int]:
        """The token's principal and `exp` (valid while the time is before it, as PyJWT decides)."""
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
        principal = Principal(subject=str(claims["sub"]), role=role, provider_id=provider_id, amr=amr)
        return principal, int(claims["exp"])
