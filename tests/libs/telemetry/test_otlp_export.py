"""Spans leave the process over OTLP/HTTP (protobuf) when the standard OpenTelemetry variables say so."""

from __future__ import annotations

import httpx
from opentelemetry.trace import SpanKind

from libs.telemetry import setup_telemetry
from tests.conftest import ServiceProcesses, wait_for
from tests.libs.telemetry.otlp_receiver import ReceivedSpan, otlp_receiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_spans_are_posted_as_protobuf_to_the_traces_path_of_the_endpoint() -> None:
    with otlp_receiver() as receiver:
        telemetry = setup_telemetry("otlp-test", "otlp", otlp_endpoint=f"{receiver.endpoint}/v1/traces")
        with telemetry.tracer.start_as_current_span("work"):
            pass
        telemetry.shutdown()  # flushes the batch

        assert [(span.service, span.name) for span in receiver.received()] == [("otlp-test", "work")]
        assert receiver.content_types == ["application/x-protobuf"]


def test_a_service_stopped_with_sigterm_sends_its_last_spans_before_it_exits(
    service_processes: ServiceProcesses,
) -> None:
    """A deploy stops every process: the spans it finished in the seconds before (a batch is sent every 5 s by
    default, here only at shutdown) still reach the collector, and the process exits 0 after its drain."""
    with otlp_receiver() as receiver:
        worker = service_processes.start(
            "email-worker", 19603, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="600000"
        )
        worker.wait_ready()
        traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
        assert httpx.get(worker.url("/health/live"), headers={"traceparent": traceparent}).status_code == 200
        assert not any(span.trace_id == TRACE_ID for span in receiver.received())

        assert worker.stop() == 0
        assert [span.name for span in receiver.received() if span.trace_id == TRACE_ID] == ["GET /health/live"]


def server_span_of_a_request(service_processes: ServiceProcesses, port: int) -> ReceivedSpan:
    """Starts email-worker exporting to a receiver, asks /health/live within a sampled trace, returns its span."""
    with otlp_receiver() as receiver:
        worker = service_processes.start(
            "email-worker", port, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="100"
        )
        worker.wait_ready()
        traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
        assert httpx.get(worker.url("/health/live"), headers={"traceparent": traceparent}).status_code == 200

        def server_span_arrived() -> bool:
            return any(span.trace_id == TRACE_ID for span in receiver.received())

        wait_for(server_span_arrived, 15, "the request's span at the OTLP receiver")
        worker.stop()
        return next(span for span in receiver.received() if span.trace_id == TRACE_ID)


def test_a_service_process_exports_its_server_spans_to_otel_exporter_otlp_endpoint(
    service_processes: ServiceProcesses,
) -> None:
    span = server_span_of_a_request(service_processes, 19601)

    assert span.service == "email-worker"
    assert span.kind == SpanKind.SERVER.value + 1  # OTLP counts from UNSPECIFIED = 0
    assert span.attributes["http.route"] == "/health/live"


def test_a_service_processs_server_span_follows_the_http_semantic_conventions(
    service_processes: ServiceProcesses,
) -> None:
    span = server_span_of_a_request(service_processes, 19602)

    assert span.name == "GET /health/live"
    assert (span.attributes["http.request.method"], span.attributes["http.response.status_code"]) == ("GET", 200)
