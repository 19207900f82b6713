"""`/console/login` and `/console/logout`: email, password and TOTP code against the same users, throttle and
lockout as the gateway's token route (libs.auth.login); only an admin who gave a right code gets a session."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_401_UNAUTHORIZED, HTTP_403_FORBIDDEN, HTTP_429_TOO_MANY_REQUESTS
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service.console.access import PUBLIC, SESSION_COOKIE, expired_session_cookie, session_cookie
from dlq_service.console.dead_letters import Form, field
from dlq_service.console.forms import NOTICES, link, safe_next
from dlq_service.sessions import ConsoleSessions
from dlq_service.settings import Settings
from libs.auth import TotpSecrets
from libs.auth.login import Lockout, login, throttle_key
from libs.logging import get_logger
from libs.ratelimit import RateLimiter
from libs.web import client_address

log = get_logger("dlq_service.console")
WRONG = "Wrong email, password or code."
NOT_ADMIN = "The console is for administrators only."
NO_MFA = "The console needs a TOTP code from your authenticator app: an administrator without one cannot log in."


def _refused(reason: str, status: int, email: str, next_page: str) -> Template:
    return Template(
        template_name="login.html", status_code=status,
        context={"refusal": reason, "email": email, "next": next_page, "notice": None},
    )  # fmt: skip


class LoginController(Controller):
    path = "/"
    opt = {PUBLIC: True}  # noqa: RUF012

    @get("/login", name="console:login")
    async def form(self, request: Request[Any, Any, Any]) -> Template:
        return Template(
            template_name="login.html",
            context={"refusal": None, "email": "", "next": safe_next(request.query_params.get("next")),
                     "notice": NOTICES.get(request.query_params.get("notice") or "")},
        )  # fmt: skip

    @post("/login", name="console:login-submit")
    async def submit(
        self,
        request: Request[Any, Any, Any],
        data: Form,
        engine: NamedDependency[AsyncEngine],
        settings: NamedDependency[Settings],
        console_sessions: NamedDependency[ConsoleSessions],
        login_throttle: NamedDependency[RateLimiter],
        totp: NamedDependency[TotpSecrets | None],
    ) -> Template | Redirect:
        email, password, code = field(data, "email").strip(), field(data, "password"), field(data, "totp_code").strip()
        next_page = safe_next(field(data, "next"))
        if totp is None:
            return _refused("Console login is not configured here (TOTP_ENCRYPTION_KEY).", 503, email, next_page)
        if not email or not password or len(email) > 320 or len(password) > 200 or len(code) > 10:
            return _refused(WRONG, HTTP_401_UNAUTHORIZED, email[:320], next_page)
        client = client_address(request, settings.trusted_proxies)
        wait = await login_throttle.retry_after(throttle_key(email, client))
        if wait is not None:
            refusal = _refused(f"Too many attempts: try again in {wait} s.", HTTP_429_TOO_MANY_REQUESTS, email,
                               next_page)  # fmt: skip
            refusal.headers["Retry-After"] = str(wait)
            return refusal
        principal = await login(engine, totp, Lockout.from_settings(settings), email, password, code or None)
        if principal is None:
            log.warn("console.login_refused", {"email_domain": email.rsplit("@", 1)[-1], "client": client})
            return _refused(WRONG, HTTP_401_UNAUTHORIZED, email, next_page)
        if principal.role != "admin":
            log.warn("console.login_refused_role", {"subject": principal.subject, "role": principal.role})
            return _refused(NOT_ADMIN, HTTP_403_FORBIDDEN, email, next_page)
        if not principal.has_mfa:
            log.warn("console.login_refused_mfa", {"subject": principal.subject})
            return _refused(NO_MFA, HTTP_403_FORBIDDEN, email, next_page)
        token = await console_sessions.open(uuid.UUID(principal.subject))
        log.info("console.session_opened", {"subject": principal.subject})
        return Redirect(
            path=next_page, status_code=303,
            cookies=[session_cookie(token, int(console_sessions.lifetime.total_seconds()))],
        )  # fmt: skip

    @post("/logout", name="console:logout")
    async def logout(
        self, request: Request[Any, Any, Any], console_sessions: NamedDependency[ConsoleSessions]
    ) -> Redirect:
        """Ends the session on the server: the cookie, wherever a copy of it is, opens nothing any more."""
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            await console_sessions.close(token)
        return Redirect(
            path=link("/console/login", notice="logged-out"), status_code=303, cookies=[expired_session_cookie()]
        )
