"""The Litestar app of a service: ops routes, request context, security headers, JSON bodies that cannot crash
a handler, readiness turning 503 on shutdown, 503 with Retry-After while the database cannot take a request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Litestar, MediaType, Request, Response
from litestar.datastructures import MutableScopeHeaders
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import ControllerRouterHandler, LifespanHook, Message, Scope

from libs.health import Readiness
from libs.logging import get_logger
from libs.messaging.outage import is_unavailable
from libs.settings import ServiceSettings
from libs.telemetry import Telemetry
from libs.web.middleware import RequestContext
from libs.web.openapi import document_refusals
from libs.web.ops_routes import ops_routes
from libs.web.requests import JsonSafeRequest
from libs.web.security import security_headers

log = get_logger("fmhl.http")


def refusal_as_json(_: Request[Any, Any, Any], error: HTTPException) -> Response[dict[str, Any]]:
    """Every refusal is the JSON error body the documents promise, also on a route that answers CSV or a file
    (Litestar would otherwise send the JSON under the route's own media type)."""
    # As Litestar does: a server error's own detail stays in the log, never in the answer.
    detail = error.detail if error.status_code != HTTP_500_INTERNAL_SERVER_ERROR else "Internal Server Error"
    body: dict[str, Any] = {"status_code": error.status_code, "detail": detail}
    if error.extra is not None:
        body["extra"] = error.extra
    return Response(body, status_code=error.status_code, headers=error.headers, media_type=MediaType.JSON)


RETRY_AFTER_S = 5
UNAVAILABLE = "the database cannot take this request now; nothing was changed, retry later"
# Lock and statement timeouts, deadlocks and serialization failures: the request did not happen, and the same
# request later can succeed (is_unavailable covers the connection, shutdown and resource classes).
RETRY_LATER_SQLSTATES = frozenset({"55P03", "57014", "40P01", "40001"})


def unavailable(detail: str = UNAVAILABLE) -> HTTPException:
    return HTTPException(
        status_code=HTTP_503_SERVICE_UNAVAILABLE, detail=detail, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


def retry_later(error: BaseException) -> bool:
    """The request failed for a reason that says nothing about it: the database is away, busy or slow."""
    if is_unavailable(error) or isinstance(error, TimeoutError):
        return True
    original = getattr(error, "orig", None)
    return getattr(original, "sqlstate", None) in RETRY_LATER_SQLSTATES


def unexpected_error(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, Any]]:
    """503 with Retry-After when the database cannot take the request now (an outage, the first request on a
    pool a restart left stale, a lock timeout); any other error stays a 500."""
    if retry_later(error):
        return refusal_as_json(request, unavailable())
    return refusal_as_json(request, HTTPException(status_code=HTTP_500_INTERNAL_SERVER_ERROR))


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

    # Litestar's automatic OPTIONS answer lists the methods of the first handler registered on a path only.
    allowed: dict[str, str] = {}

    async def allow_every_method(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start" and scope.get("method") == "OPTIONS":
            methods = allowed.get(str(scope.get("path_template")))
            headers = MutableScopeHeaders.from_message(message)
            if methods is not None and "allow" in headers:
                headers["allow"] = methods

    app = Litestar(
        route_handlers=[*ops_routes(telemetry, readiness, settings.metrics_enabled), *route_handlers],
        on_startup=list(on_startup),
        on_shutdown=[mark_shutting_down, *on_shutdown],
        middleware=[DefineMiddleware(RequestContext, telemetry=telemetry)],
        after_exception=[log_unexpected],
        before_send=[security_headers, allow_every_method],
        request_class=JsonSafeRequest,
        exception_handlers={HTTPException: refusal_as_json, Exception: unexpected_error},
        logging_config=None,
        # A service without an API serves no /schema (Litestar would otherwise serve an empty one by default).
        **({"openapi_config": None} | litestar_options),
    )
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            allowed[route.path_format] = ", ".join(sorted(route.methods))
    if app.openapi_config is not None:
        # Every route is registered by now; the document Litestar caches and serves is completed once, here.
        document_refusals(app.openapi_schema)
    return app
