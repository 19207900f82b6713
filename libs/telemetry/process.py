"""The meter and tracer of one service process, with metrics exposed in Prometheus text format; either can be
switched off for real (no-op providers), and spans are recorded only where something exports them."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter, MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import NoOpTracerProvider, Tracer, TracerProvider
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from libs.settings import ServiceSettings
from libs.telemetry.instruments import DURATION_BUCKETS_S

PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST

MESSAGING_DURATIONS = View(
    instrument_type=HistogramInstrument,
    instrument_name="messaging.*",
    aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS_S),
)
"""FastStream's `messaging.publish.duration` and `messaging.process.duration` are recorded in seconds, which the
SDK's default boundaries (0, 5, 10, 25, ... 10000, meant for milliseconds) would put all in the first bucket."""


@dataclass(frozen=True)
class Telemetry:
    """The meter and tracer of one process; built once at start and passed to whoever records."""

    service: str
    meter_provider: MeterProvider
    tracer_provider: TracerProvider
    registry: CollectorRegistry
    metrics_enabled: bool = True
    traces_enabled: bool = True

    @property
    def enabled(self) -> bool:
        """Whether anything is recorded or propagated at all: when not, a broker needs no telemetry middleware."""
        return self.metrics_enabled or self.traces_enabled

    @property
    def meter(self) -> Meter:
        return self.meter_provider.get_meter("fmhl")

    @property
    def tracer(self) -> Tracer:
        return self.tracer_provider.get_tracer("fmhl")

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        if isinstance(self.tracer_provider, SdkTracerProvider):
            self.tracer_provider.shutdown()
        if isinstance(self.meter_provider, SdkMeterProvider):
            self.meter_provider.shutdown()


def sampler(traces_exporter: str, sample_ratio: float) -> Sampler:
    """No exporter: no span is recorded (nothing would read it), yet every span still gets ids, so logs and
    propagated `traceparent` headers keep their trace ids. With one: `sample_ratio` of new traces, and a
    message or request follows the decision its caller made."""
    if traces_exporter == "none":
        return ALWAYS_OFF
    return ParentBased(TraceIdRatioBased(sample_ratio))


def setup_telemetry(
    service: str,
    traces_exporter: str = "none",
    *,
    metrics: bool = True,
    traces: bool = True,
    sample_ratio: float = 1.0,
    otlp_endpoint: str | None = None,
) -> Telemetry:
    """`metrics=False` / `traces=False`: a no-op meter / tracer, whose instruments and spans cost nothing.
    `traces_exporter="otlp"` posts spans in batches to `otlp_endpoint` (the full URL; None: the exporter's own
    default, http://localhost:4318/v1/traces, and OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION apply)."""
    resource = Resource.create({"service.name": service})
    # A registry per process object, not the global one: tests build several services in one interpreter.
    registry = CollectorRegistry(auto_describe=True)
    meter_provider: MeterProvider = NoOpMeterProvider()
    if metrics:
        reader = PrometheusMetricReader(registry=registry, scope_info_enabled=False)
        # No exemplars: the Prometheus exposition has no place for them, yet the SDK's default filter would look at
        # the current span on every measurement to decide whether to keep one.
        meter_provider = SdkMeterProvider(
            resource=resource,
            metric_readers=[reader],
            views=[MESSAGING_DURATIONS],
            exemplar_filter=AlwaysOffExemplarFilter(),
        )
    tracer_provider: TracerProvider = NoOpTracerProvider()
    if traces:
        sdk_tracer_provider = SdkTracerProvider(resource=resource, sampler=sampler(traces_exporter, sample_ratio))
        if traces_exporter == "console":
            sdk_tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif traces_exporter == "otlp":
            # Batched in the background: a request never waits on the collector, and shutdown() flushes.
            sdk_tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
        tracer_provider = sdk_tracer_provider
    return Telemetry(service, meter_provider, tracer_provider, registry, metrics, traces)


def telemetry_for(settings: ServiceSettings) -> Telemetry:
    """As the settings ask: TELEMETRY_ENABLED=false turns off both; METRICS_ENABLED=false (no /metrics route to
    read them) turns off the instruments."""
    return setup_telemetry(
        settings.service_name,
        settings.traces_exporter,
        metrics=settings.telemetry_enabled and settings.metrics_enabled,
        traces=settings.telemetry_enabled,
        sample_ratio=settings.traces_sample_ratio,
        otlp_endpoint=settings.otlp_traces_endpoint,
    )
