"""OpenTelemetry metrics (exposed in Prometheus text format) and traces for one service process."""

from libs.telemetry.http import HttpServerTelemetry
from libs.telemetry.instruments import DURATION_BUCKETS_MS, DURATION_BUCKETS_S, counter, duration_histogram, gauge
from libs.telemetry.polling import DatabaseGauge, PeriodicRefresh
from libs.telemetry.process import PROMETHEUS_CONTENT_TYPE, Telemetry, setup_telemetry, telemetry_for

__all__ = [
    "DURATION_BUCKETS_MS",
    "DURATION_BUCKETS_S",
    "PROMETHEUS_CONTENT_TYPE",
    "DatabaseGauge",
    "HttpServerTelemetry",
    "PeriodicRefresh",
    "Telemetry",
    "counter",
    "duration_histogram",
    "gauge",
    "setup_telemetry",
    "telemetry_for",
]
