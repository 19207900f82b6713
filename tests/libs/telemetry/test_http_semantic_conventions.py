"""An HTTP request is recorded under the plan's `_ms` name and under OpenTelemetry's HTTP semantic conventions."""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import INVALID_SPAN, SpanKind, StatusCode

from libs.telemetry import HttpServerTelemetry, setup_telemetry
from libs.telemetry.http import MAX_SERIES
from tests.libs.telemetry.otlp_receiver import ReceivedSpan, otlp_receiver
from tests.libs.telemetry.test_messaging_buckets import bucket_counts


def scope(method: str = "GET", path: str = "/v1/leads/42") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "scheme": "http", "http_version": "1.1",
            "server": ("127.0.0.1", 8000)}  # fmt: skip


def one_request(method: str, route: str | None, status: int, elapsed_s: float) -> tuple[ReceivedSpan, str]:
    with otlp_receiver() as receiver:
        telemetry = setup_telemetry("http-test", "otlp", otlp_endpoint=f"{receiver.endpoint}/v1/traces")
        http = HttpServerTelemetry(telemetry)
        request = scope(method)
        with http.span(request) as span:
            http.record(span, request, route, status, elapsed_s)
        exposition = telemetry.exposition().decode()
        telemetry.shutdown()
        [received] = receiver.received()
    return received, exposition


def test_the_server_span_is_named_by_method_and_route_with_the_conventions_attributes() -> None:
    span, _ = one_request("GET", "/v1/leads/{lead_id:uuid}", 200, 0.012)

    assert span.name == "GET /v1/leads/{lead_id:uuid}"
    assert span.kind == SpanKind.SERVER.value + 1  # OTLP counts from UNSPECIFIED = 0
    wanted = ("http.request.method", "http.route", "http.response.status_code", "url.scheme", "url.path", "server.port")
    assert {key: span.attributes[key] for key in wanted} == {
        "http.request.method": "GET",
        "http.route": "/v1/leads/{lead_id:uuid}",
        "http.response.status_code": 200,
        "url.scheme": "http",
        "url.path": "/v1/leads/42",
        "server.port": 8000,
    }


def test_the_duration_is_in_seconds_beside_the_plans_milliseconds() -> None:
    _, exposition = one_request("POST", "/v1/leads", 201, 0.03)

    seconds = bucket_counts(exposition, "http_server_request_duration_seconds")
    assert (seconds["0.025"], seconds["0.05"]) == (0.0, 1.0)
    assert 'http_request_method="POST"' in exposition
    assert 'http_route="/v1/leads"' in exposition
    assert 'http_response_status_code="201"' in exposition
    milliseconds = bucket_counts(exposition, "fmhl_http_request_duration_ms")
    assert (milliseconds["25.0"], milliseconds["50.0"]) == (0.0, 1.0)


def test_a_server_error_fails_the_span_and_a_client_error_does_not() -> None:
    failed, exposition = one_request("GET", "/v1/leads", 503, 0.001)
    refused, _ = one_request("GET", "/v1/leads", 404, 0.001)

    assert (failed.status_code, failed.attributes["error.type"]) == (StatusCode.ERROR.value, "503")
    assert 'error_type="503"' in exposition
    assert refused.status_code == StatusCode.UNSET.value
    assert "error.type" not in refused.attributes


def test_an_invented_method_is_other_and_an_unmatched_request_is_named_by_method_alone() -> None:
    span, exposition = one_request("BREW", None, 405, 0.001)

    assert span.name == "HTTP"
    assert (span.attributes["http.request.method"], span.attributes["http.request.method_original"]) == (
        "_OTHER",
        "BREW",
    )
    assert "http.route" not in span.attributes
    assert 'route="unmatched"' in exposition


def test_every_request_is_counted_in_both_series_when_no_span_records() -> None:
    telemetry = setup_telemetry("http-test", "none")
    http = HttpServerTelemetry(telemetry)
    for status, elapsed_s in ((202, 0.03), (202, 0.003), (503, 0.003)):
        request = scope("POST")
        with http.span(request) as span:
            assert not span.is_recording()
            http.record(span, request, "/v1/leads", status, elapsed_s)
    exposition = telemetry.exposition().decode()
    telemetry.shutdown()

    accepted = 'method="POST",route="/v1/leads",status="202"'
    assert f"fmhl_http_request_duration_ms_count{{{accepted}}} 2.0" in exposition
    assert 'fmhl_http_request_duration_ms_count{method="POST",route="/v1/leads",status="503"} 1.0' in exposition
    counts = [line for line in exposition.splitlines() if line.startswith("http_server_request_duration_seconds_count")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in counts) == 3.0
    assert len(counts) == 2  # one series per status


def test_two_apps_of_one_process_count_into_the_same_series() -> None:
    telemetry = setup_telemetry("http-test", "none")
    for http in (HttpServerTelemetry(telemetry), HttpServerTelemetry(telemetry)):
        request = scope("POST")
        with http.span(request) as span:
            http.record(span, request, "/v1/leads", 202, 0.003)
    exposition = telemetry.exposition().decode()
    telemetry.shutdown()

    assert 'fmhl_http_request_duration_ms_count{method="POST",route="/v1/leads",status="202"} 2.0' in exposition


def test_invented_methods_are_one_other_series_in_the_conventions_and_their_own_in_the_plans() -> None:
    telemetry = setup_telemetry("http-test", "none")
    http = HttpServerTelemetry(telemetry)
    for method in ("BREW", "WHEN"):
        request = scope(method)
        with http.span(request) as span:
            http.record(span, request, None, 405, 0.001)
    exposition = telemetry.exposition().decode()
    telemetry.shutdown()

    assert 'fmhl_http_request_duration_ms_count{method="BREW",route="unmatched",status="405"} 1.0' in exposition
    assert 'fmhl_http_request_duration_ms_count{method="WHEN",route="unmatched",status="405"} 1.0' in exposition
    [other] = [
        line for line in exposition.splitlines() if line.startswith("http_server_request_duration_seconds_count")
    ]
    assert 'http_request_method="_OTHER"' in other
    assert other.endswith(" 2.0")


def test_label_sets_past_the_limit_are_counted_in_one_overflow_series() -> None:
    telemetry = setup_telemetry("http-test", "none")
    http = HttpServerTelemetry(telemetry)
    for n in range(MAX_SERIES - 1 + 5):
        request = scope("GET")
        http.record(INVALID_SPAN, request, f"/v1/route-{n}", 200, 0.001)
    exposition = telemetry.exposition().decode()
    telemetry.shutdown()

    counts = [line for line in exposition.splitlines() if line.startswith("fmhl_http_request_duration_ms_count")]
    assert len(counts) == MAX_SERIES
    [overflow] = [line for line in counts if 'otel_metric_overflow="true"' in line]
    assert overflow.endswith(" 5.0")


def test_a_process_with_metrics_off_exposes_no_request_durations() -> None:
    telemetry = setup_telemetry("http-test", "none", metrics=False)
    http = HttpServerTelemetry(telemetry)
    request = scope("POST")
    with http.span(request) as span:
        http.record(span, request, "/v1/leads", 202, 0.003)

    assert "duration" not in telemetry.exposition().decode()
