"""The console's wiring: its router under /console (session guard, CSRF, strict headers, error pages), what its
pages receive by name, and its templates."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Response, Router
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import ResponseHeader
from litestar.di import Provide
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service.console.access import (
    CSRF_COOKIE,
    HEADERS,
    PATH,
    PUBLIC,
    SecureCookiesOverHttps,
    current_admin,
    error_page,
    session_guard,
    to_login,
)
from dlq_service.console.audit import AuditController
from dlq_service.console.dead_letters import DeadLettersController
from dlq_service.console.jobs import JobsController
from dlq_service.console.login import LoginController
from dlq_service.console.overview import OverviewController
from dlq_service.console.redrives import RedrivesController
from dlq_service.scheduled_jobs import SchedulerApi
from dlq_service.sessions import ConsoleSessions
from dlq_service.settings import Settings
from libs.auth import Tokens, TotpSecrets
from libs.auth.login import THROTTLE_SCOPE
from libs.ratelimit import RateLimiter
from libs.web import constant

HERE = Path(__file__).parent
SCHEDULER_TOKEN_TTL_S = 60


@dataclass(frozen=True)
class Console:
    router: Router
    templates: TemplateConfig[JinjaTemplateEngine]


def csrf_secret(settings: Settings) -> str:
    """Derived from the service's retry signing key under its own label: a secret of its own without one more
    setting to provision, and knowing it tells nothing about the signing key."""
    key = settings.dlq_retry_signing_key.get_secret_value().encode()
    return hmac.new(key, b"fmhl console csrf", hashlib.sha256).hexdigest()


NOTHING = "\N{EN DASH}"
"""What a page shows for a time or a duration that does not exist (yet)."""


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else NOTHING


def _seconds(value: float | None) -> str:
    if value is None:
        return NOTHING
    seconds = int(value)
    if seconds < 120:
        return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _json(value: Any, indent: bool = False) -> str:
    """JSON as text for a page, escaped there like any text (Jinja's `tojson` is for scripts: it shows `<` as
    `\\u003c`)."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0, default=str).decode()


def templates() -> TemplateConfig[JinjaTemplateEngine]:
    """Every template escapes what it prints (payloads, headers and errors are whatever a publisher sent)."""
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
    )
    environment.filters["when"] = _when
    environment.filters["seconds"] = _seconds
    environment.filters["json"] = _json
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


async def with_headers(response: Response[Any]) -> Response[Any]:
    """The static files' handler is its own router: the console's headers are added to what it answers."""
    for name, value in HEADERS.items():
        response.headers[name] = value
    return response


def build_console(settings: Settings, engine: AsyncEngine, http: httpx.AsyncClient) -> Console:
    sessions = ConsoleSessions(
        engine, timedelta(seconds=settings.console_session_idle_s), timedelta(seconds=settings.console_session_max_s)
    )
    secret = settings.jwt_secret.get_secret_value()
    scheduler = SchedulerApi(
        settings.scheduler_url, Tokens(secret, settings.jwt_issuer, settings.jwt_audience, SCHEDULER_TOKEN_TTL_S), http
    )
    key = settings.totp_encryption_key
    dependencies: dict[str, Provide] = {
        "admin": Provide(current_admin, sync_to_thread=False),
        "console_sessions": constant(sessions),
        "scheduler_api": constant(scheduler),
        "login_throttle": constant(RateLimiter(engine, THROTTLE_SCOPE, settings.login_attempts_per_minute)),
        "totp": constant(TotpSecrets.from_keys(key.get_secret_value()) if key else None),
    }
    csrf = CSRFConfig(
        secret=csrf_secret(settings), cookie_name=CSRF_COOKIE, cookie_path=PATH, cookie_httponly=True,
        cookie_samesite="strict", header_name="x-csrf-token",
    )  # fmt: skip
    static = create_static_files_router(
        path="/static", directories=[HERE / "static"], opt={PUBLIC: True}, include_in_schema=False,
        name="console:static", send_as_attachment=False, after_request=with_headers,
    )  # fmt: skip
    exception_handlers: dict[Any, Any] = {
        NotAuthorizedException: to_login,
        HTTPException: error_page,
        Exception: error_page,
    }
    router = Router(
        path=PATH,
        route_handlers=[LoginController, OverviewController, DeadLettersController, RedrivesController,
                        JobsController, AuditController, static],
        guards=[session_guard(sessions)],
        dependencies=dependencies,
        middleware=[SecureCookiesOverHttps, DefineMiddleware(CSRFMiddleware, config=csrf)],
        response_headers=[ResponseHeader(name=name, value=value) for name, value in HEADERS.items()],
        exception_handlers=exception_handlers,
        include_in_schema=False,
    )  # fmt: skip
    return Console(router=router, templates=templates())
