"""What a dead letter says about its failure, read from our error headers or the broker's `x-death`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.messaging import headers as h

BROKER_REASONS = frozenset({"rejected", "expired", "maxlen", "delivery_limit"})


@dataclass(frozen=True)
class FailureContext:
    queue: str
    reason: str
    error_type: str | None
    error_message: str | None
    attempts: int | None
    service: str | None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def read_failure(headers: Mapping[str, Any]) -> FailureContext:
    """Our consumer policy's headers win; a broker dead-letter is described by its first `x-death` entry."""
    if h.REASON in headers:
        attempts = headers.get(h.ATTEMPTS)
        return FailureContext(
            queue=_text(headers.get(h.ORIGINAL_QUEUE)) or "unknown",
            reason=_text(headers.get(h.REASON)) or "error",
            error_type=_text(headers.get(h.ERROR_TYPE)),
            error_message=_text(headers.get(h.ERROR_MESSAGE)),
            attempts=int(attempts) if isinstance(attempts, int) else None,
            service=_text(headers.get(h.SERVICE)),
        )
    deaths = headers.get("x-death") or []
    first = deaths[0] if deaths and isinstance(deaths[0], Mapping) else {}
    reason = _text(headers.get("x-first-death-reason")) or _text(first.get("reason")) or "rejected"
    count = first.get("count")
    return FailureContext(
        queue=_text(headers.get("x-first-death-queue")) or _text(first.get("queue")) or "unknown",
        reason=reason if reason in BROKER_REASONS else "rejected",
        error_type=None,
        error_message=f"dead-lettered by the broker: {reason}",
        attempts=int(count) if isinstance(count, int) else None,
        service=None,
    )
