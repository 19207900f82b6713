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

from libs.db.tables import DeadLetterReason
from libs.messaging import headers as h

BROKER_REASONS = frozenset(DeadLetterReason) - {DeadLetterReason.error}
SENSITIVE_KEYS = frozenset({"email", "phone", "name", "to"})
_NUMBERS = re.compile(r"\b\d+\b")
_UUIDS = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{16,}\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|<[^>]*>")
_FRAME = re.compile(r'File "([^"]+)", line \d+, in (\S+)')


@dataclass(frozen=True)
class DeadLetterMessage:
    """A message as it arrived on the `dlq` queue, read into what the store keeps of it."""

    message_id: str | None
    correlation_id: str | None
    message_type: str | None
    content_type: str | None
    queue: str
    exchange: str
    routing_key: str
    reason: DeadLetterReason
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

    def entry_values(self, entry_id: uuid.UUID) -> dict[str, Any]:
        """A new `dead_letter_queue` row: text cut to its column's length, an empty id stored as NULL, JSON as
        text for the jsonb columns."""
        return {
            "id": entry_id,
            "queue_name": self.queue[:100],
            "job_id": _bounded(self.message_id, 100),
            "payload": _json(self.payload),
            "error_message": self.error_message,
            "stack_trace": self.stack_trace,
            "attempts": self.attempts,
            "failed_at": self.last_failed_at,
            "original_exchange": self.exchange[:255],
            "original_routing_key": self.routing_key[:255],
            "message_id": _bounded(self.message_id, 200),
            "correlation_id": _bounded(self.correlation_id, 128),
            "headers": _json(self.headers),
            "raw_body": self.raw_body,
            "reason": self.reason,
            "error_type": self.error_type,
            "fingerprint": self.fingerprint,
            "service": self.service,
            "first_failed_at": self.first_failed_at,
            "last_failed_at": self.last_failed_at,
            "message_type": _bounded(self.message_type, 100),
            "content_type": _bounded(self.content_type, 100),
        }

    def event_values(self, entry_id: uuid.UUID) -> dict[str, Any]:
        """The `dead_letter_events` row of this delivery, which its dedupe key makes unique."""
        return {
            "entry_id": entry_id,
            "dedupe_key": self.dedupe_key,
            "reason": self.reason,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "attempts": self.attempts,
            "failed_at": self.last_failed_at,
        }


def _bounded(value: str | None, length: int) -> str | None:
    return value[:length] or None if value else None


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


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


def _reason(value: Any, otherwise: DeadLetterReason) -> DeadLetterReason:
    try:
        return DeadLetterReason(_text(value) or "")
    except ValueError:
        return otherwise


def broker_reason(said: str) -> DeadLetterReason:
    """RabbitMQ's own `x-death` reasons; anything else it might say is stored as a rejection."""
    reason = _reason(said, DeadLetterReason.rejected)
    return reason if reason in BROKER_REASONS else DeadLetterReason.rejected


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
) -> DeadLetterMessage:
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
        return DeadLetterMessage(
            message_id=message_id,
            correlation_id=correlation_id,
            message_type=message_type,
            content_type=content_type,
            queue=_text(headers.get(h.ORIGINAL_QUEUE)) or "unknown",
            exchange=_text(headers.get(h.ORIGINAL_EXCHANGE)) or "",
            routing_key=_text(headers.get(h.ORIGINAL_ROUTING_KEY)) or "",
            reason=_reason(headers.get(h.REASON), DeadLetterReason.error),
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
    said = _text(headers.get("x-first-death-reason")) or _text(first.get("reason")) or DeadLetterReason.rejected.value
    count = first.get("count")
    delivery_count = headers.get("x-delivery-count")
    routing_keys = first.get("routing-keys") or []
    died_at = _time(first.get("time")) or now
    return DeadLetterMessage(
        message_id=message_id,
        correlation_id=correlation_id,
        message_type=message_type,
        content_type=content_type,
        queue=_text(headers.get("x-first-death-queue")) or _text(first.get("queue")) or "unknown",
        exchange=_text(headers.get("x-first-death-exchange")) or _text(first.get("exchange")) or "",
        routing_key=(_text(routing_keys[0]) or "") if routing_keys else "",
        reason=broker_reason(said),
        error_type=None,
        error_message=f"dead-lettered by the broker: {said}",
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
