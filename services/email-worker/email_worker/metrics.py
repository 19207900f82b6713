"""email-worker instruments."""

from dataclasses import dataclass

from opentelemetry.metrics import Counter

from libs.telemetry import Telemetry


@dataclass(frozen=True)
class EmailMetrics:
    sent: Counter
    skipped_duplicates: Counter

    @classmethod
    def create(cls, telemetry: Telemetry) -> "EmailMetrics":
        meter = telemetry.meter
        return cls(
            sent=meter.create_counter("fmhl_emails_sent_total", unit="", description="Emails accepted by SMTP."),
            skipped_duplicates=meter.create_counter(
                "fmhl_emails_duplicate_skipped_total", unit="", description="Redelivered jobs already sent."
            ),
        )
