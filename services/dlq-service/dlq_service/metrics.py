"""dlq-service instruments."""

from dataclasses import dataclass

from opentelemetry.metrics import Counter

from libs.telemetry import Telemetry


@dataclass(frozen=True)
class DlqMetrics:
    received: Counter

    @classmethod
    def create(cls, telemetry: Telemetry) -> "DlqMetrics":
        return cls(
            received=telemetry.meter.create_counter(
                "fmhl_dead_letters_received_total",
                unit="",
                description="Dead letters received, by queue and reason.",
            )
        )
