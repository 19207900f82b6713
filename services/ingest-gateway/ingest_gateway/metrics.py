"""ingest-gateway instruments."""

from dataclasses import dataclass

from opentelemetry.metrics import Counter

from libs.telemetry import Telemetry


@dataclass(frozen=True)
class GatewayMetrics:
    leads_submitted: Counter

    @classmethod
    def create(cls, telemetry: Telemetry) -> "GatewayMetrics":
        return cls(
            leads_submitted=telemetry.meter.create_counter(
                "fmhl_leads_submitted_total", unit="", description="Leads accepted (202) at the HTTP edge."
            )
        )
