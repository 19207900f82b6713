"""Every HTTP request gets a correlation id, a server span, a log line and a duration by route template (under the
plan's name and OpenTelemetry's HTTP semantic conventions)."""

from __future__ import annotations

import re
import time
import uuid

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import propagate

from libs.logging import correlation_scope, get_logger
from libs.telemetry import HttpServerTelemetry, Telemetry

CORRELATION_HEADER = "x-correlation-id"
_CORRELATION_NAME = CORRELATION_HEADER.encode()
_VALID_CORRELATION = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Probes and scrapes come every few seconds; a log line each would drown the requests that matter.
_QUIET_ROUTES = frozenset({"/health/live", "/health/ready", "/metrics"})
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
        self.http = HttpServerTelemetry(telemetry)
        # The headers read here; the others are decoded by Litestar when a route asks for them.
        self.read = frozenset(
            name.encode("latin-1") for name in (CORRELATION_HEADER, *propagate.get_global_textmap().fields)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"] if key in self.read
        }
        correlation_id = accept_correlation_id(headers.get(CORRELATION_HEADER))
        status = 500
        started = time.perf_counter()

        async def send_with_correlation(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (_CORRELATION_NAME, correlation_id.encode())]
            await send(message)

        parent = propagate.extract(headers)
        with correlation_scope(correlation_id), self.http.span(scope, parent) as span:
            try:
                await self.app(scope, receive, send_with_correlation)
            finally:
                template = scope.get("path_template")
                elapsed_s = time.perf_counter() - started
                self.http.record(span, scope, template, status, elapsed_s)
                route = template or "unmatched"
                if route not in _QUIET_ROUTES:
                    log.info("http.request", {"method": method, "route": route, "status": str(status),
                                              "duration_ms": round(elapsed_s * 1000, 1)})  # fmt: skip
