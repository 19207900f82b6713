"""OpenTelemetry metrics (exposed in Prometheus text format) and traces for one service process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Histogram, Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import Tracer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Explicit float boundaries: the SDK's defaults have no 2000 boundary, and the alert thresholds
# (inbox p95 1000 ms, distribution p95 2000 ms) must fall on one for quantiles to be exact there.
DURATION_BUCKETS_MS: tuple[float, ...] = (
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0,
)  # fmt: skip
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


def duration_histogram(meter: Meter, name: str, description: str) -> Histogram:
    """A millisecond histogram exposed under exactly `name` (an "ms" unit would append `_milliseconds`)."""
    return meter.create_histogram(
        name, unit="", description=description, explicit_bucket_boundaries_advisory=DURATION_BUCKETS_MS
    )


class PeriodicRefresh:
    """Runs `refresh` every `interval_s` in the background, for gauges whose value needs I/O to read
    (observable-gauge callbacks are synchronous). A failed refresh is retried at the next interval."""

    def __init__(self, refresh: Callable[[], Awaitable[None]], interval_s: float, name: str) -> None:
        self.refresh = refresh
        self.interval_s = interval_s
        self.name = name
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.refresh()
            await asyncio.sleep(self.interval_s)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
