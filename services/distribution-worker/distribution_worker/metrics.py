"""distribution-worker's own instruments (the queue metrics come with the consumer policy)."""

from dataclasses import dataclass

from opentelemetry.metrics import Counter

from libs.telemetry import Telemetry


@dataclass(frozen=True)
class DistributionMetrics:
    leads_received: Counter

    @classmethod
    def create(cls, telemetry: Telemetry) -> "DistributionMetrics":
        return cls(
            leads_received=telemetry.meter.create_counter(
                "fmhl_distribution_leads_received_total",
                unit="",
                description="Lead events received, by type.",
            )
        )
