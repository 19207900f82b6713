"""HTTP side of every service: health and metrics routes, correlation and request metrics, the server."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Sequence
from types import FrameType
from typing import Any

import uvicorn
from litestar import Litestar, MediaType, Response, get
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, ControllerRouterHandler, LifespanHook, Message, Receive, Scope, Send
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from prometheus_client import start_http_server

from libs.health import Readiness
from libs.logging import correlation_scope, get_logger
from libs.settings import ServiceSettings
from libs.telemetry import PROMETHEUS_CONTENT_TYPE, Telemetry, duration_histogram

CORRELATION_HEADER = "x-correlation-id"
_VALID_CORRELATION = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
log = get_logger("fmhl.http")


def accept_correlation_id(value: str | None) -> str:
    """A caller's id is kept when it is a sane token; anything else gets a fresh UUID (it lands in logs)."""
    if value and _VALID_CORRELATION.match(value):
        return value
    return str(uuid.uuid4())


class RequestContext:
    """ASGI middleware: binds the correlation id and a server span, times the request by route template.

    It runs after routing, so `path_template` is known; a request that matches no route is answered by
    Litestar before it and is not timed.
    """

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.tracer = telemetry.tracer
        self.duration = duration_histogram(
            telemetry.meter, "fmhl_http_request_duration_ms", "HTTP request duration by route template."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        correlation_id = accept_correlation_id(headers.get(CORRELATION_HEADER))
        status = 500
        started = time.perf_counter()

        async def send_with_correlation(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (CORRELATION_HEADER.encode(), correlation_id.encode())]  # fmt: skip
            await send(message)

        parent = propagate.extract(headers)
        with (
            correlation_scope(correlation_id),
            self.tracer.start_as_current_span(f"{scope['method']} http", context=parent, kind=SpanKind.SERVER),
        ):
            try:
                await self.app(scope, receive, send_with_correlation)
            finally:
                route = scope.get("path_template") or "unmatched"
                elapsed_ms = (time.perf_counter() - started) * 1000
                attributes = {"method": method, "route": route, "status": str(status)}
                self.duration.record(elapsed_ms, attributes)
                trace.get_current_span().set_attribute("http.route", route)
                if route not in {"/health/live", "/health/ready", "/metrics"}:
                    log.info("http.request", {**attributes, "duration_ms": round(elapsed_ms, 1)})


def ops_routes(telemetry: Telemetry, readiness: Readiness, metrics_enabled: bool) -> list[ControllerRouterHandler]:
    @get("/health/live", media_type=MediaType.JSON, include_in_schema=False, sync_to_thread=False)
    def live() -> dict[str, str]:
        return {"status": "alive"}

    @get("/health/ready", media_type=MediaType.JSON, include_in_schema=False)
    async def ready() -> Response[dict[str, Any]]:
        ok, body = await readiness.report()
        return Response(body, status_code=200 if ok else 503)

    @get("/metrics", include_in_schema=False, sync_to_thread=False)
    def metrics() -> Response[bytes]:
        return Response(telemetry.exposition(), media_type=PROMETHEUS_CONTENT_TYPE)

    return [live, ready, *([metrics] if metrics_enabled else [])]


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
        logging_config=None,
        **litestar_options,
    )


class _Server(uvicorn.Server):
    """Readiness turns 503 as soon as the stop signal arrives, before in-flight work drains."""

    def __init__(self, config: uvicorn.Config, readiness: Readiness) -> None:
        super().__init__(config)
        self.readiness = readiness

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.readiness.shutting_down = True
        super().handle_exit(sig, frame)


def serve(app: Litestar, settings: ServiceSettings, telemetry: Telemetry, readiness: Readiness) -> None:
    """Run until SIGTERM/SIGINT; the app's shutdown hooks then stop consuming and drain in-flight work."""
    if settings.metrics_enabled and settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.http_host, registry=telemetry.registry)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=20,
        server_header=False,
    )
    asyncio.run(_Server(config, readiness).serve())
    telemetry.shutdown()
