"""`POST /api/v1/auth/token`: email + password (+ TOTP code) -> a short-lived JWT."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.params import Body
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway.accounts import login
from libs.auth import Tokens
from libs.contracts import EmailAddress
from libs.logging import get_logger
from libs.ratelimit import RateLimiter

log = get_logger("ingest_gateway.auth")


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: EmailAddress
    password: Annotated[str, Field(min_length=1, max_length=200)]
    totp_code: Annotated[str | None, Field(pattern=r"^[0-9]{6}$")] = None


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int
    amr: list[str]


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
        throttle: NamedDependency[RateLimiter],
    ) -> TokenResponse:
        client = request.client.host if request.client else "unknown"
        wait = await throttle.retry_after(f"{data.email.lower()}|{client}")
        if wait is not None:
            raise TooManyRequestsException("too many login attempts", headers={"Retry-After": str(wait)})
        principal = await login(engine, data.email, data.password, data.totp_code)
        if principal is None:
            log.warn("auth.login_refused", {"email_domain": data.email.rsplit("@", 1)[-1]})
            raise NotAuthorizedException("wrong email, password or code")
        log.info("auth.token_issued", {"subject": principal.subject, "role": principal.role, "amr": principal.amr})
        return TokenResponse(access_token=tokens.issue(principal), expires_in=tokens.ttl_s, amr=list(principal.amr))
