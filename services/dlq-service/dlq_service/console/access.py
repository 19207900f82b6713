"""Who gets a console page and what every answer carries: the session guard, the session cookie, cookies marked
Secure over HTTPS, the strict response headers, and error pages instead of JSON."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from dlq_service.console.forms import link
from dlq_service.sessions import ConsoleSessions, SessionUser

SESSION_COOKIE = "fmhl_console_session"
CSRF_COOKIE = "fmhl_console_csrf"
PATH = "/console"
PUBLIC = "console_public"
"""`opt` key of the routes that need no session: the login page and the static files."""
_ADMIN = "console_admin"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}


def session_guard(sessions: ConsoleSessions) -> Any:
    """Every console route but the public ones needs a live session of an admin (its idle clock moves)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        if handler.opt.get(PUBLIC):
            return
        token = connection.cookies.get(SESSION_COOKIE)
        admin = await sessions.resume(token) if token else None
        if admin is None:
            raise NotAuthorizedException("log in to the console")
        connection.state[_ADMIN] = admin

    return guard


def current_admin(request: Request[Any, Any, Any]) -> SessionUser:
    """The guard's admin, for handlers (a dependency)."""
    admin: SessionUser = request.state[_ADMIN]
    return admin


def session_cookie(token: str, max_age: int) -> Cookie:
    return Cookie(key=SESSION_COOKIE, value=token, path=PATH, httponly=True, samesite="strict", max_age=max_age)


def expired_session_cookie() -> Cookie:
    return Cookie(key=SESSION_COOKIE, value="", path=PATH, httponly=True, samesite="strict", max_age=0)


class SecureCookiesOverHttps:
    """Over HTTPS every cookie the console sets is marked Secure, whoever sets it (the session, Litestar's CSRF)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                cookies = headers.getall("set-cookie", [])
                if cookies:
                    del headers["set-cookie"]
                    for cookie in cookies:
                        headers.add("set-cookie", cookie if "secure" in cookie.lower() else cookie + "; Secure")
            await send(message)

        await self.app(scope, receive, send_secure)


def to_login(request: Request[Any, Any, Any], _: NotAuthorizedException) -> Response[Any]:
    """No session: to the login page, which comes back here afterwards (a GET's own URL, else the overview)."""
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = link(f"{PATH}/login", next=back if request.method == "GET" else None)
    return Redirect(path=target, status_code=303, headers=HEADERS)


def error_page(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """An HTTP error as a page; anything else is a 500 that says nothing about its cause."""
    status = error.status_code if isinstance(error, HTTPException) else HTTP_500_INTERNAL_SERVER_ERROR
    detail = error.detail if isinstance(error, HTTPException) and status < 500 else "Something went wrong."
    return Template(
        template_name="error.html", context={"status": status, "detail": detail}, status_code=status, headers=HEADERS
    )
