"""email-worker's own instruments (the queue metrics come with the consumer policy)."""

from dataclasses import dataclass

from opentelemetry.metrics import Counter

from libs.telemetry import Telemetry


@dataclass(frozen=True)
class EmailMetrics:
    received: Counter

    @classmethod
    def create(cls, telemetry: Telemetry) -> "EmailMetrics":
        return cls(
            received=telemetry.meter.create_counter(
                "fmhl_email_jobs_received_total", unit="", description="Jobs received, by type."
            )
        )
