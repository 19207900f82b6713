"""An HTTP server request under two names: the plan's `fmhl_http_request_duration_ms{method,route,status}` and
OpenTelemetry's HTTP semantic conventions (`http.server.request.duration` in seconds, a SERVER span named
`{method} {route}` with the `http.*`/`url.*` attributes), so dashboards and backends built for either read it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from libs.telemetry.instruments import DURATION_BUCKETS_S, duration_histogram
from libs.telemetry.process import Telemetry

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
"""Any other method is `_OTHER`, as the conventions ask: a client inventing methods must not grow the series."""


def semantic_method(method: str) -> str:
    return method if method in KNOWN_METHODS else "_OTHER"


def request_attributes(scope: Mapping[str, Any]) -> dict[str, str | int]:
    """What is known of an ASGI request before it is routed (the span's start attributes)."""
    attributes: dict[str, str | int] = {
        "http.request.method": semantic_method(str(scope.get("method", ""))),
        "url.scheme": str(scope.get("scheme", "http")),
        "url.path": str(scope.get("path", "")),
        "network.protocol.version": str(scope.get("http_version", "1.1")),
    }
    if scope.get("method") not in KNOWN_METHODS:
        attributes["http.request.method_original"] = str(scope.get("method", ""))
    server = scope.get("server")
    if server:
        attributes["server.address"], attributes["server.port"] = str(server[0]), int(server[1])
    return attributes


@dataclass(frozen=True)
class _Outcome:
    """What `record` attaches to a request of one method, route and status: built once per combination."""

    labels: dict[str, str]
    """The plan's `_ms` series."""
    attributes: dict[str, str | int]
    """The conventions' duration series."""
    span_attributes: dict[str, str | int]
    """What the span did not get at its start."""
    span_name: str | None
    failed: bool


MAX_OUTCOMES = 1000
"""Combinations remembered: known methods by route template and status are far fewer; beyond, each is built anew."""


class HttpServerTelemetry:
    """Created once per app (its instruments are the process's); `span()` around each request, then `record()`."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.tracer = telemetry.tracer
        self.duration_ms = duration_histogram(
            telemetry.meter, "fmhl_http_request_duration_ms", "HTTP request duration by route template."
        )
        self.duration = telemetry.meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )
        self._outcomes: dict[tuple[str, str | None, int, str, str], _Outcome] = {}

    @contextmanager
    def span(self, scope: Mapping[str, Any], parent: Context | None = None) -> Iterator[Span]:
        """The request's SERVER span, current while the request runs; named `{method}` until `record` knows the
        route (the conventions' name when no route matched). Its attributes are built only when it records (no
        sampler in use looks at them)."""
        with self.tracer.start_as_current_span(_span_method(scope), context=parent, kind=SpanKind.SERVER) as span:
            if span.is_recording():
                span.set_attributes(request_attributes(scope))
            yield span

    def record(self, span: Span, scope: Mapping[str, Any], route: str | None, status: int, elapsed_s: float) -> None:
        """`route`: the matched route template, None when none matched (the `_ms` series says `unmatched`)."""
        outcome = self._outcome(scope, route, status)
        self.duration_ms.record(elapsed_s * 1000, outcome.labels)
        if span.is_recording():
            if outcome.span_name is not None:
                span.update_name(outcome.span_name)
            if outcome.failed:
                span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(outcome.span_attributes)
        self.duration.record(elapsed_s, outcome.attributes)

    def _outcome(self, scope: Mapping[str, Any], route: str | None, status: int) -> _Outcome:
        method = str(scope.get("method", ""))
        key = (method, route, status, str(scope.get("scheme", "http")), str(scope.get("http_version", "1.1")))
        outcome = self._outcomes.get(key)
        if outcome is None:
            outcome = _outcome_of(scope, route, status)
            # An invented method is not remembered: a client sending many must not grow the process.
            if method in KNOWN_METHODS and len(self._outcomes) < MAX_OUTCOMES:
                self._outcomes[key] = outcome
        return outcome


def _outcome_of(scope: Mapping[str, Any], route: str | None, status: int) -> _Outcome:
    method = str(scope.get("method", ""))
    attributes: dict[str, str | int] = {
        "http.request.method": semantic_method(method),
        "url.scheme": str(scope.get("scheme", "http")),
        "http.response.status_code": status,
        "network.protocol.name": "http",
        "network.protocol.version": str(scope.get("http_version", "1.1")),
    }
    if route is not None:
        attributes["http.route"] = route
    if status >= 500:
        # Only a server error fails a SERVER span; a 4xx is the client's, as the conventions say.
        attributes["error.type"] = str(status)
    known = request_attributes(scope)  # the span has these from its start
    return _Outcome(
        labels={"method": method, "route": route or "unmatched", "status": str(status)},
        attributes=attributes,
        span_attributes={key: value for key, value in attributes.items() if key not in known},
        span_name=None if route is None else f"{_span_method(scope)} {route}",
        failed=status >= 500,
    )


def _span_method(scope: Mapping[str, Any]) -> str:
    method = semantic_method(str(scope.get("method", "")))
    return "HTTP" if method == "_OTHER" else method
