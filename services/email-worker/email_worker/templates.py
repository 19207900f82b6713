"""What each email says: pure rendering from the job's parameters, plain text."""

from __future__ import annotations

import re
from collections.abc import Mapping

WHOLE_CENTS = re.compile(r"-?[0-9]+")


def _money(cents: object) -> str:
    # Anything but whole cents shows as zero rather than failing the mail ("--5" and "²" pass str.isdigit checks).
    value = int(cents) if isinstance(cents, int) or (isinstance(cents, str) and WHOLE_CENTS.fullmatch(cents)) else 0
    return f"${value // 100:,}.{value % 100:02d}" if value >= 0 else f"-${-value // 100:,}.{-value % 100:02d}"


def render(template: str, params: Mapping[str, str | int]) -> tuple[str, str]:
    """(subject, body) of a template; unknown templates are refused by the message contract already."""
    match template:
        case "new_lead":
            return (
                "New lead assigned to you",
                f"A new lead ({params.get('lead_id', '?')}) is in your inbox. "
                f"Charged: {_money(params.get('price_cents', 0))}.",
            )
        case "low_balance":
            return (
                "Your balance is running low",
                f"Your balance is {_money(params.get('balance_cents', 0))}. Top up to keep receiving leads.",
            )
        case "refund_approved":
            return (
                "Your bad-lead report was approved",
                f"We refunded {_money(params.get('amount_cents', 0))} for lead {params.get('lead_id', '?')}. "
                f"New balance: {_money(params.get('balance_cents', 0))}.",
            )
        case "export_ready":
            return (
                "Your export is ready",
                f"Export {params.get('export_id', '?')} ({params.get('row_count', 0)} rows) is ready to download.",
            )
        case "subscription_reactivated":
            return (
                "Your subscription is active again",
                f"Subscription {params.get('subscription_id', '?')} receives leads again.",
            )
    raise ValueError(f"unknown template {template!r}")
