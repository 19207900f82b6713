"""distribution-worker's own instruments (the queue metrics come with the consumer policy)."""

from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram

from libs.telemetry import Telemetry, duration_histogram


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
    def create(cls, telemetry: Telemetry) -> "DistributionMetrics":
        meter = telemetry.meter
        return cls(
            distribution_duration=duration_histogram(
                meter, "fmhl_distribution_duration_ms", "Time to distribute one lead, in one transaction."
            ),
            billing_duration=duration_histogram(
                meter, "fmhl_billing_operation_duration_ms", "Time of one conditional charge."
            ),
            assignments_created=meter.create_counter(
                "fmhl_assignments_created_total", unit="", description="Leads assigned (and charged) to providers."
            ),
            skipped_insufficient_balance=meter.create_counter(
                "fmhl_assignments_skipped_insufficient_balance_total",
                unit="",
                description="Matching providers skipped because their balance did not cover the price.",
            ),
            billing_failures=meter.create_counter(
                "fmhl_billing_failures_total", unit="", description="Charges that failed with an error."
            ),
            leads_approved=meter.create_counter(
                "fmhl_leads_approved_total", unit="", description="Leads approved, by who approved (admin, auto)."
            ),
            leads_unassigned=meter.create_counter(
                "fmhl_leads_unassigned_total", unit="", description="Approved leads no provider could take."
            ),
        )
