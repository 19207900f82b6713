"""email-worker instruments."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter

from libs.telemetry import Telemetry, counter


@dataclass(frozen=True)
class EmailMetrics:
    sent: Counter
    skipped_duplicates: Counter

    @classmethod
    def create(cls, telemetry: Telemetry) -> EmailMetrics:
        meter = telemetry.meter
        return cls(
            sent=counter(meter, "fmhl_emails_sent_total", "Emails accepted by SMTP."),
            skipped_duplicates=counter(meter, "fmhl_emails_duplicate_skipped_total", "Redelivered jobs already sent."),
        )
