"""The Litestar app of a service: ops routes, request context, security headers, JSON bodies that cannot crash
a handler, readiness turning 503 on shutdown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Litestar
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.types import ControllerRouterHandler, LifespanHook, Scope

from libs.health import Readiness
from libs.logging import get_logger
from libs.settings import ServiceSettings
from libs.telemetry import Telemetry
from libs.web.middleware import RequestContext
from libs.web.ops_routes import ops_routes
from libs.web.requests import JsonSafeRequest
from libs.web.security import security_headers

log = get_logger("fmhl.http")


def create_app(
    settings: ServiceSettings,
    telemetry: Telemetry,
    readiness: Readiness,
    *,
    route_handlers: Sequence[ControllerRouterHandler] = (),
    on_startup: Sequence[LifespanHook] = (),
    on_shutdown: Sequence[LifespanHook] = (),
    **litestar_options: Any,
) -> Litestar:
    async def mark_shutting_down() -> None:
        readiness.shutting_down = True

    async def log_unexpected(error: Exception, scope: Scope) -> None:
        if not isinstance(error, HTTPException) or error.status_code >= 500:
            log.error("http.unhandled_error", error, {"route": scope.get("path_template") or scope.get("path")})

    return Litestar(
        route_handlers=[*ops_routes(telemetry, readiness, settings.metrics_enabled), *route_handlers],
        on_startup=list(on_startup),
        on_shutdown=[mark_shutting_down, *on_shutdown],
        middleware=[DefineMiddleware(RequestContext, telemetry=telemetry)],
        after_exception=[log_unexpected],
        before_send=[security_headers],
        request_class=JsonSafeRequest,
        logging_config=None,
        # A service without an API serves no /schema (Litestar would otherwise serve an empty one by default).
        **({"openapi_config": None} | litestar_options),
    )
