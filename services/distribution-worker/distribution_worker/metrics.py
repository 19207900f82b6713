"""distribution-worker's own instruments (the queue metrics come with the consumer policy)."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram

from libs.telemetry import Telemetry, counter, duration_histogram


@dataclass(frozen=True)
class DistributionMetrics:
    distribution_duration: Histogram
    billing_duration: Histogram
    assignments_created: Counter
    skipped_insufficient_balance: Counter
    billing_failures: Counter
    leads_approved: Counter
    leads_unassigned: Counter

    @classmethod
    def create(cls, telemetry: Telemetry) -> DistributionMetrics:
        meter = telemetry.meter
        return cls(
            distribution_duration=duration_histogram(
                meter, "fmhl_distribution_duration_ms", "Time to distribute one lead, in one transaction."
            ),
            billing_duration=duration_histogram(
                meter,
                "fmhl_billing_operation_duration_ms",
                "Time of the statement that made a charge, once per charge (a lead's charges share one statement).",
            ),
            assignments_created=counter(
                meter, "fmhl_assignments_created_total", "Leads assigned (and charged) to providers."
            ),
            skipped_insufficient_balance=counter(
                meter,
                "fmhl_assignments_skipped_insufficient_balance_total",
                "Matching providers skipped because their balance did not cover the price.",
            ),
            billing_failures=counter(meter, "fmhl_billing_failures_total", "Charges that failed with an error."),
            leads_approved=counter(
                meter, "fmhl_leads_approved_total", "Leads approved, by who approved (admin, auto)."
            ),
            leads_unassigned=counter(meter, "fmhl_leads_unassigned_total", "Approved leads no provider could take."),
        )
