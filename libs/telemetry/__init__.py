"""OpenTelemetry metrics (exposed in Prometheus text format) and traces for one service process."""

from libs.telemetry.instruments import DURATION_BUCKETS_MS, counter, duration_histogram, gauge
from libs.telemetry.polling import DatabaseGauge, PeriodicRefresh
from libs.telemetry.process import PROMETHEUS_CONTENT_TYPE, Telemetry, setup_telemetry, telemetry_for

__all__ = [
    "DURATION_BUCKETS_MS",
    "PROMETHEUS_CONTENT_TYPE",
    "DatabaseGauge",
    "PeriodicRefresh",
    "Telemetry",
    "counter",
    "duration_histogram",
    "gauge",
    "setup_telemetry",
    "telemetry_for",
]
