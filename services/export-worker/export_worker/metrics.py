"""export-worker instruments."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram

from libs.telemetry import Telemetry, counter, duration_histogram


@dataclass(frozen=True)
class ExportMetrics:
    rows_written: Counter
    export_duration: Histogram

    @classmethod
    def create(cls, telemetry: Telemetry) -> ExportMetrics:
        meter = telemetry.meter
        return cls(
            rows_written=counter(meter, "fmhl_export_rows_total", "CSV rows written."),
            export_duration=duration_histogram(meter, "fmhl_export_duration_ms", "Time to write one export."),
        )
