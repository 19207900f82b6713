"""What a dead letter says about its failure: pure reading of our error headers or the broker's `x-death`,
the grouping fingerprint, and what may be stored or shown of it."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from libs.messaging import headers as h

BROKER_REASONS = frozenset({"rejected", "expired", "maxlen", "delivery_limit"})
SENSITIVE_KEYS = frozenset({"email", "phone", "name", "to"})
_NUMBERS = re.compile(r"\b\d+\b")
_UUIDS = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{16,}\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|<[^>]*>")
_FRAME = re.compile(r'File "([^"]+)", line \d+, in (\S+)')


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    correlation_id: str | None
    message_type: str | None
    content_type: str | None
    queue: str
    exchange: str
    routing_key: str
    reason: str
    error_type: str | None
    error_message: str | None
    stack_trace: str | None
    attempts: int | None
    service: str | None
    first_failed_at: datetime
    last_failed_at: datetime
    retried_entry: uuid.UUID | None
    headers: dict[str, Any]
    raw_body: bytes
    payload: Any

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.error_type or self.reason, self.error_message or "", self.stack_trace or "")

    @property
    def dedupe_key(self) -> str:
        """Same dead letter delivered again -> same key; the same message failing again later -> a new key."""
        identity = self.message_id or hashlib.sha256(self.raw_body).hexdigest()
        marker = "|".join([identity, self.queue, self.reason, self.last_failed_at.isoformat(), str(self.attempts)])
        return hashlib.sha256(marker.encode()).hexdigest()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text.replace("\x00", "\ufffd")


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str | bytes):
        try:
            parsed = datetime.fromisoformat(_text(value) or "")
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def json_safe(value: Any) -> Any:
    """Header values as JSON PostgreSQL accepts: no NUL, bytes as text, times as ISO-8601."""
    if isinstance(value, Mapping):
        return {str(key).replace("\x00", "\ufffd"): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, bytes | str):
        return _text(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    return _text(str(value))


def decode_payload(body: bytes) -> Any:
    """The body as JSON when it is JSON that jsonb can hold, else None (the raw bytes are kept regardless)."""
    try:
        decoded = orjson.loads(body)
    except (orjson.JSONDecodeError, RecursionError, ValueError):
        return None
    if b"\\u0000" in orjson.dumps(decoded):
        return None
    return decoded


def normalize_message(message: str) -> str:
    """Ids, numbers and quoted values vary between occurrences of one failure; the rest is its shape."""
    shape = _UUIDS.sub("<uuid>", message)
    shape = _QUOTED.sub("<value>", shape)
    shape = _HEX.sub("<hex>", shape)
    return _NUMBERS.sub("<n>", shape).strip()[:500]


def top_application_frame(stack: str) -> str:
    """The innermost frame in our code (libs/ or services/), as path tail and function: no line numbers."""
    frames: list[tuple[str, str]] = _FRAME.findall(stack)
    ours = [(path, function) for path, function in frames if "/libs/" in path or "/services/" in path]
    if not ours:
        return ""
    path, function = ours[-1]
    return "/".join(path.split("/")[-2:]) + ":" + function


def fingerprint(error_type: str, message: str, stack: str) -> str:
    key = "|".join([error_type, normalize_message(message), top_application_frame(stack)])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def read_dead_letter(
    headers: Mapping[str, Any],
    body: bytes,
    *,
    message_id: str | None,
    correlation_id: str | None,
    message_type: str | None,
    content_type: str | None,
    now: datetime,
) -> DeadLetter:
    """Our consumer policy's headers win; a broker dead-letter is described by its first `x-death` entry."""
    deaths = headers.get("x-death") or []
    first = deaths[0] if deaths and isinstance(deaths[0], Mapping) else {}
    retried = _text(headers.get(h.DLQ_ENTRY))
    try:
        retried_entry = uuid.UUID(retried) if retried else None
    except ValueError:
        retried_entry = None
    if h.REASON in headers:
        attempts = headers.get(h.ATTEMPTS)
        last = _time(headers.get(h.LAST_FAILURE_AT)) or now
        return DeadLetter(
            message_id=message_id,
            correlation_id=correlation_id,
            message_type=message_type,
            content_type=content_type,
            queue=_text(headers.get(h.ORIGINAL_QUEUE)) or "unknown",
            exchange=_text(headers.get(h.ORIGINAL_EXCHANGE)) or "",
            routing_key=_text(headers.get(h.ORIGINAL_ROUTING_KEY)) or "",
            reason=_text(headers.get(h.REASON)) or "error",
            error_type=_text(headers.get(h.ERROR_TYPE)),
            error_message=_text(headers.get(h.ERROR_MESSAGE)),
            stack_trace=_text(headers.get(h.ERROR_STACK)),
            attempts=attempts if isinstance(attempts, int) else None,
            service=_text(headers.get(h.SERVICE)),
            first_failed_at=_time(headers.get(h.FIRST_FAILURE_AT)) or last,
            last_failed_at=last,
            retried_entry=retried_entry,
            headers=json_safe(dict(headers)),
            raw_body=body,
            payload=decode_payload(body),
        )
    reason = _text(headers.get("x-first-death-reason")) or _text(first.get("reason")) or "rejected"
    count = first.get("count")
    delivery_count = headers.get("x-delivery-count")
    routing_keys = first.get("routing-keys") or []
    died_at = _time(first.get("time")) or now
    return DeadLetter(
        message_id=message_id,
        correlation_id=correlation_id,
        message_type=message_type,
        content_type=content_type,
        queue=_text(headers.get("x-first-death-queue")) or _text(first.get("queue")) or "unknown",
        exchange=_text(headers.get("x-first-death-exchange")) or _text(first.get("exchange")) or "",
        routing_key=(_text(routing_keys[0]) or "") if routing_keys else "",
        reason=reason if reason in BROKER_REASONS else "rejected",
        error_type=None,
        error_message=f"dead-lettered by the broker: {reason}",
        stack_trace=None,
        attempts=delivery_count + 1 if isinstance(delivery_count, int) else (count if isinstance(count, int) else None),
        service=None,
        first_failed_at=died_at,
        last_failed_at=died_at,
        retried_entry=retried_entry,
        headers=json_safe(dict(headers)),
        raw_body=body,
        payload=decode_payload(body),
    )


def mask(value: Any, key: str = "") -> Any:
    """Contact details in payloads, hidden for lists and logs (the detail view shows them)."""
    if isinstance(value, Mapping):
        return {name: mask(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [mask(item, key) for item in value]
    if key.lower() in SENSITIVE_KEYS and isinstance(value, str):
        if "@" in value:
            local, _, domain = value.partition("@")
            return f"{local[:1]}***@{domain}"
        return value[:1] + "***" if value else value
    return value
