"""The meter and tracer of one service process, with metrics exposed in Prometheus text format."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class Telemetry:
    """The meter and tracer of one process; built once at start and passed to whoever records."""

    service: str
    meter_provider: MeterProvider
    tracer_provider: TracerProvider
    registry: CollectorRegistry

    @property
    def meter(self) -> Meter:
        return self.meter_provider.get_meter("fmhl")

    @property
    def tracer(self) -> Tracer:
        return self.tracer_provider.get_tracer("fmhl")

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def setup_telemetry(service: str, traces_exporter: str = "none") -> Telemetry:
    resource = Resource.create({"service.name": service})
    # A registry per process object, not the global one: tests build several services in one interpreter.
    registry = CollectorRegistry(auto_describe=True)
    reader = PrometheusMetricReader(registry=registry, scope_info_enabled=False)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    tracer_provider = TracerProvider(resource=resource)
    if traces_exporter == "console":
        tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    return Telemetry(service, meter_provider, tracer_provider, registry)
