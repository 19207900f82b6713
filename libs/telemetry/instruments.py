"""Instruments exposed under exactly the names given: an OpenTelemetry unit would become a name suffix
(`fmhl_x_ms` with unit "ms" is scraped as `fmhl_x_ms_milliseconds`), so every instrument here has none."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, ObservableGauge, Observation

# Explicit float boundaries: the SDK's defaults have no 2000 boundary, and the alert thresholds
# (inbox p95 1000 ms, distribution p95 2000 ms) must fall on one for quantiles to be exact there.
DURATION_BUCKETS_MS: tuple[float, ...] = (
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0,
)  # fmt: skip

DURATION_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 2.5, 5.0, 7.5, 10.0, 30.0,
)  # fmt: skip
"""OpenTelemetry's recommended boundaries for durations in seconds, with the alert thresholds' 2 s and 30 s added."""


def counter(meter: Meter, name: str, description: str) -> Counter:
    return meter.create_counter(name, unit="", description=description)


def duration_histogram(meter: Meter, name: str, description: str) -> Histogram:
    """Milliseconds, in buckets that put a boundary on every alert threshold."""
    return meter.create_histogram(
        name, unit="", description=description, explicit_bucket_boundaries_advisory=DURATION_BUCKETS_MS
    )


def gauge(meter: Meter, name: str, description: str, observe: Callable[[], Iterable[Observation]]) -> ObservableGauge:
    """A gauge read at scrape time: `observe` must answer from memory (the callback is synchronous)."""

    def callback(_: CallbackOptions) -> Iterable[Observation]:
        return observe()

    return meter.create_observable_gauge(name, callbacks=[callback], unit="", description=description)
