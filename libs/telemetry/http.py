"""An HTTP server request under two names: the plan's `fmhl_http_request_duration_ms{method,route,status}` and
OpenTelemetry's HTTP semantic conventions (`http.server.request.duration` in seconds, a SERVER span named
`{method} {route}` with the `http.*`/`url.*` attributes), so dashboards and backends built for either read it."""

from __future__ import annotations

import weakref
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from libs.telemetry.instruments import DURATION_BUCKETS_MS, DURATION_BUCKETS_S
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


MS_NAME, MS_HELP = "fmhl_http_request_duration_ms", "HTTP request duration by route template."
SECONDS_NAME, SECONDS_HELP = "http_server_request_duration_seconds", "Duration of HTTP server requests."
MAX_SERIES = 2000
"""Series at most, as the OpenTelemetry SDK's default cardinality limit: past MAX_SERIES - 1 label sets, a request
with a new one is counted in one series labelled `otel_metric_overflow="true"`, as the SDK does."""
_OVERFLOW = {"otel_metric_overflow": "true"}


@dataclass
class _Series:
    """One label set's requests in both histograms: counts per bucket (the last one past every boundary) and the
    sum of durations in seconds."""

    labels: dict[str, str]
    attributes: dict[str, str]
    """The conventions' attributes as Prometheus labels (dots as underscores, values as text)."""
    ms_counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_MS) + 1))
    s_counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_S) + 1))
    sum_s: float = 0.0

    def observe(self, elapsed_s: float) -> None:
        # bisect_left: a duration equal to a boundary falls in that boundary's bucket (`le`).
        self.ms_counts[bisect_left(DURATION_BUCKETS_MS, elapsed_s * 1000)] += 1
        self.s_counts[bisect_left(DURATION_BUCKETS_S, elapsed_s)] += 1
        self.sum_s += elapsed_s


class _Durations(Collector):
    """The two request-duration histograms of one process, exposed as the OpenTelemetry Prometheus reader exposed
    them (names, help, every label a family's series have, "" where a series lacks one). Recording is a bucket
    look-up and three additions on the request's own series (the SDK's record path cleaned, hashed and looked up
    the attributes under a lock on every call: 38 us for the two, 6% of a lead's CPU). Written on the event loop,
    read by a scrape (perhaps METRICS_PORT's thread): each series' counts are copied at once, and a histogram's
    count is its buckets' total, so a scrape never sees a count its buckets do not add up to."""

    def __init__(self) -> None:
        self.series: dict[tuple[tuple[str, str], ...], _Series] = {}

    def series_for(self, labels: dict[str, str], attributes: Mapping[str, str | int]) -> _Series:
        as_labels = {name.replace(".", "_"): str(value) for name, value in attributes.items()}
        key = (*labels.items(), *as_labels.items())
        found = self.series.get(key)
        if found is None:
            if len(self.series) >= MAX_SERIES - 1:
                key, labels, as_labels = tuple(_OVERFLOW.items()), _OVERFLOW, _OVERFLOW
                found = self.series.get(key)
            if found is None:
                found = self.series.setdefault(key, _Series(labels, as_labels))
        return found

    def describe(self) -> Iterable[Metric]:
        return [
            HistogramMetricFamily(MS_NAME, MS_HELP, labels=()),
            HistogramMetricFamily(SECONDS_NAME, SECONDS_HELP, labels=()),
        ]

    def collect(self) -> Iterable[Metric]:
        every = list(self.series.values())
        yield _family(
            MS_NAME, MS_HELP, DURATION_BUCKETS_MS, 1000.0, [(s.labels, list(s.ms_counts), s.sum_s) for s in every]
        )
        yield _family(
            SECONDS_NAME,
            SECONDS_HELP,
            DURATION_BUCKETS_S,
            1.0,
            [(s.attributes, list(s.s_counts), s.sum_s) for s in every],
        )


def _family(
    name: str, documentation: str, boundaries: tuple[float, ...], scale: float,
    series: list[tuple[dict[str, str], list[int], float]],
) -> HistogramMetricFamily:  # fmt: skip
    """Series with the same labels (invented methods are all `_OTHER` in the conventions) summed into one."""
    names = sorted({name for labels, _, _ in series for name in labels})
    summed: dict[tuple[str, ...], tuple[list[int], float]] = {}
    for labels, counts, sum_s in series:
        values = tuple(labels.get(name, "") for name in names)
        earlier = summed.get(values)
        if earlier is not None:
            counts, sum_s = [a + b for a, b in zip(earlier[0], counts, strict=True)], earlier[1] + sum_s
        summed[values] = (counts, sum_s)
    family = HistogramMetricFamily(name, documentation, labels=names)
    bounds = [*(repr(boundary) for boundary in boundaries), "+Inf"]  # 5.0, 0.005: as the exporter wrote them
    for values, (counts, sum_s) in summed.items():
        cumulative, buckets = 0, []
        for bound, count in zip(bounds, counts, strict=True):
            cumulative += count
            buckets.append((bound, float(cumulative)))
        family.add_metric(list(values), buckets, sum_s * scale)
    return family


_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, _Durations] = weakref.WeakKeyDictionary()


def _durations(telemetry: Telemetry) -> _Durations | None:
    """The process's durations collector, registered once on its registry (several apps of one process share
    it); None when metrics are off."""
    if not telemetry.metrics_enabled:
        return None
    durations = _BY_REGISTRY.get(telemetry.registry)
    if durations is None:
        durations = _BY_REGISTRY[telemetry.registry] = _Durations()
        telemetry.registry.register(durations)
    return durations


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
    series: _Series | None
    """Where both durations are counted; None when metrics are off."""


MAX_OUTCOMES = 1000
"""Combinations remembered: known methods by route template and status are far fewer; beyond, each is built anew."""


class HttpServerTelemetry:
    """Created once per app (its durations are the process's); `span()` around each request, then `record()`."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.tracer = telemetry.tracer
        self.durations = _durations(telemetry)
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
        if outcome.series is not None:
            outcome.series.observe(elapsed_s)
        if span.is_recording():
            if outcome.span_name is not None:
                span.update_name(outcome.span_name)
            if outcome.failed:
                span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(outcome.span_attributes)

    def _outcome(self, scope: Mapping[str, Any], route: str | None, status: int) -> _Outcome:
        method = str(scope.get("method", ""))
        key = (method, route, status, str(scope.get("scheme", "http")), str(scope.get("http_version", "1.1")))
        outcome = self._outcomes.get(key)
        if outcome is None:
            outcome = _outcome_of(scope, route, status, self.durations)
            # An invented method is not remembered: a client sending many must not grow the process.
            if method in KNOWN_METHODS and len(self._outcomes) < MAX_OUTCOMES:
                self._outcomes[key] = outcome
        return outcome


def _outcome_of(scope: Mapping[str, Any], route: str | None, status: int, durations: _Durations | None) -> _Outcome:
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
    labels = {"method": method, "route": route or "unmatched", "status": str(status)}
    return _Outcome(
        labels=labels,
        attributes=attributes,
        span_attributes={key: value for key, value in attributes.items() if key not in known},
        span_name=None if route is None else f"{_span_method(scope)} {route}",
        failed=status >= 500,
        series=None if durations is None else durations.series_for(labels, attributes),
    )


def _span_method(scope: Mapping[str, Any]) -> str:
    method = semantic_method(str(scope.get("method", "")))
    return "HTTP" if method == "_OTHER" else method
