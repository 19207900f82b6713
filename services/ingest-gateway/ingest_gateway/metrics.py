"""ingest-gateway instruments."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram

from libs.telemetry import Telemetry, counter, duration_histogram


@dataclass(frozen=True)
class GatewayMetrics:
    leads_submitted: Counter
    leads_approved: Counter
    bad_leads_reported: Counter
    refunds_approved: Counter
    inbox_query_duration: Histogram
    outbox_published: Counter

    @classmethod
    def create(cls, telemetry: Telemetry) -> GatewayMetrics:
        meter = telemetry.meter
        return cls(
            leads_submitted=counter(meter, "fmhl_leads_submitted_total", "Leads accepted (202) at the HTTP edge."),
            leads_approved=counter(
                meter, "fmhl_leads_approved_total", "Leads approved, by who approved (admin, auto)."
            ),
            bad_leads_reported=counter(meter, "fmhl_bad_leads_reported_total", "Bad-lead reports filed by providers."),
            refunds_approved=counter(meter, "fmhl_refunds_approved_total", "Bad-lead reports approved and refunded."),
            inbox_query_duration=duration_histogram(
                meter, "fmhl_inbox_query_duration_ms", "Time of the inbox query in the database."
            ),
            outbox_published=counter(
                meter,
                "fmhl_outbox_published_total",
                "Outbox events the relay published, by outcome (confirmed, failed).",
            ),
        )
