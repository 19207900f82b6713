"""`POST /api/v1/auth/token`: email + password (+ TOTP code) -> a short-lived JWT; admins unlock locked accounts."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, NotFoundException, TooManyRequestsException
from litestar.params import Body
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway.accounts import unlock
from ingest_gateway.settings import Settings
from libs.auth import Principal, Tokens, TotpSecrets
from libs.auth.login import Lockout, login, throttle_key
from libs.contracts import EmailAddress
from libs.db.tables import User
from libs.logging import get_logger
from libs.ratelimit import RateLimiter
from libs.web import client_address, fits_column

log = get_logger("ingest_gateway.auth")
UserEmail = Annotated[EmailAddress, fits_column(User.email)]


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: UserEmail
    password: Annotated[str, Field(min_length=1, max_length=200)]
    totp_code: Annotated[str | None, Field(pattern=r"^[0-9]{6}$")] = None


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int
    amr: list[str]


class UnlockRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: UserEmail


class Unlocked(BaseModel):
    user_id: uuid.UUID
    locked: bool


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]  # noqa: RUF012

    @post("/token", status_code=200, raises=[NotAuthorizedException, TooManyRequestsException])
    async def issue_token(
        self,
        request: Request[Any, Any, Any],
        data: Annotated[TokenRequest, Body()],
        engine: NamedDependency[AsyncEngine],
        tokens: NamedDependency[Tokens],
        totp: NamedDependency[TotpSecrets],
        lockout: NamedDependency[Lockout],
        throttle: NamedDependency[RateLimiter],
        settings: NamedDependency[Settings],
    ) -> TokenResponse:
        client = client_address(request, settings.trusted_proxies)
        wait = await throttle.retry_after(throttle_key(data.email, client))
        if wait is not None:
            raise TooManyRequestsException("too many login attempts", headers={"Retry-After": str(wait)})
        principal = await login(engine, totp, lockout, data.email, data.password, data.totp_code)
        if principal is None:
            log.warn("auth.login_refused", {"email_domain": data.email.rsplit("@", 1)[-1], "client": client})
            raise NotAuthorizedException("wrong email, password or code")
        log.info("auth.token_issued", {"subject": principal.subject, "role": principal.role, "amr": principal.amr})
        return TokenResponse(access_token=tokens.issue(principal), expires_in=tokens.ttl_s, amr=list(principal.amr))

    @post("/unlocks", status_code=200, raises=[NotFoundException], security=[{"bearer": []}])
    async def unlock_account(
        self,
        data: Annotated[UnlockRequest, Body()],
        admin: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> Unlocked:
        """Clears a locked account's lock and failure count at once (audited as user.unlocked)."""
        user_id = await unlock(engine, data.email, admin.subject)
        if user_id is None:
            raise NotFoundException("no user with this email")
        return Unlocked(user_id=user_id, locked=False)
