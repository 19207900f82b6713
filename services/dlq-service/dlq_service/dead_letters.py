"""What a dead letter says about its failure: pure reading of our error headers or the broker's `x-death`,
the grouping fingerprint, and what may be stored or shown of it.

Reading is total: whatever a header or property holds (any type, NUL, invalid UTF-8, a number past its column's
range, nesting deeper than JSON encoders go, an unknown reason), the letter that comes out fits its columns.
Text is escaped (`\\xff`, `\\x00`), cut with a marker (`…`) or left NULL; the raw body is kept as it came, and
what had to be cut from a property is kept whole in the stored headers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from libs.db.tables import DeadLetter, DeadLetterReason
from libs.logging.pii import mask_pii
from libs.messaging import headers as h
from libs.messaging.wire import printable

BROKER_REASONS = frozenset(DeadLetterReason) - {DeadLetterReason.error}
SENSITIVE_KEYS = frozenset({"email", "phone", "name", "to"})
"""Masked whatever they hold; every other string is masked where it looks like an email address or phone number."""
ORIGINAL_PROPERTIES = "fmhl-dlq-original-properties"
"""Stored among the headers when a property had to be cut to fit its column: the whole value."""
NOT_STORED = "fmhl-dlq-headers-not-stored"
"""The only header of an entry stored without its headers (PostgreSQL refused them): why."""
CUT = "…"
MAX_JSON_DEPTH = 64
"""Deeper header values are stored as a marker: orjson stops at 255 levels, PostgreSQL at its stack depth."""
INT32 = (-(2**31), 2**31 - 1)
_NUMBERS = re.compile(r"\b\d+\b")
_UUIDS = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{16,}\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|<[^>]*>")
_FRAME = re.compile(r'File "([^"]+)", line \d+, in (\S+)')
_SENSITIVE_IN_JSON = re.compile(r'"(email|phone|name|to)"(\s*:\s*)"((?:[^"\\]|\\.)*)"', re.IGNORECASE)
# Every email address mask_pii masks has an `@`, and every phone number is a run of digits and the separators a
# phone number is written with, at least seven characters long (mask_pii's own candidate, without its bounds):
# a text with neither is shown as it is, without mask_pii's patterns (its address pattern is quadratic in a long
# run of letters and digits, such as a fingerprint or an id).
_PHONE_RUN = re.compile(r"\d[\d ().\-]{5,}\d")
# asyncpg shifts times by the session's zone offset: a day of margin from datetime's own ends.
_EARLIEST = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
_LATEST = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


@functools.cache
def _limit(field: str) -> int:
    """The column's declared length, read from the table (declared once, in libs/db/tables); looked up once per
    column, not once per letter (capture's hot path)."""
    length: int = DeadLetter.__table__.c[field].type.length  # type: ignore[attr-defined]
    return length


@dataclass(frozen=True)
class RetryLink:
    """What a retried message says about the retry it came from; believed only once its signature checks."""

    entry_id: uuid.UUID
    retry_id: int
    signature: str


@dataclass(frozen=True)
class DeadLetterMessage:
    """A message as it arrived on the `dlq` queue, read into what the store keeps of it (every value fits)."""

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
    retry_link: RetryLink | None
    headers: dict[str, Any]
    raw_body: bytes
    payload: Any
    identity: str
    """The message id as it came (escaped), or the body's hash."""
    occurrence: str
    """Which failure of it this is, as the headers said it (time and count as sent, not as coerced): a redelivery
    says the same, so it has the same dedupe key even when the time it names could not be stored."""

    # Cached: capture reads each several times per letter (its row, its event, the batch's look-up and line).
    @functools.cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.error_type or self.reason, self.error_message or "", self.stack_trace or "")

    @functools.cached_property
    def dedupe_key(self) -> str:
        """Same dead letter delivered again -> same key; the same message failing again later -> a new key."""
        marker = "|".join([self.identity, self.queue, self.reason, self.occurrence])
        return hashlib.sha256(marker.encode()).hexdigest()

    def stripped(self, why: str) -> DeadLetterMessage:
        """The least of it worth a row, for when PostgreSQL refused the whole: no headers, payload or stack.
        The raw body stays, and the dedupe key is the same (a redelivery of either is recognised)."""
        return dataclasses.replace(
            self, headers={NOT_STORED: _bounded(why, 2_000)}, payload=None, stack_trace=None,
            error_message=_bounded(self.error_message, 2_000),
        )  # fmt: skip

    def entry_values(self, entry_id: uuid.UUID) -> dict[str, Any]:
        """A new `dead_letter_queue` row; JSON as text for the jsonb columns."""
        return {
            "id": entry_id,
            "queue_name": self.queue,
            "job_id": _bounded(self.message_id, _limit("job_id")),
            "payload": _json(self.payload),
            "error_message": self.error_message,
            "stack_trace": self.stack_trace,
            "attempts": self.attempts,
            "failed_at": self.last_failed_at,
            "original_exchange": self.exchange,
            "original_routing_key": self.routing_key,
            "message_id": self.message_id,
            "correlation_id": self.correlation_id,
            "headers": _json(self.headers),
            "raw_body": self.raw_body,
            "reason": self.reason,
            "error_type": self.error_type,
            "fingerprint": self.fingerprint,
            "service": self.service,
            "first_failed_at": self.first_failed_at,
            "last_failed_at": self.last_failed_at,
            "message_type": self.message_type,
            "content_type": self.content_type,
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
    """Cut to the column's length with a marker; an empty value is NULL."""
    if not value:
        return None
    return value if len(value) <= length else value[: length - len(CUT)] + CUT


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _text(value: Any) -> str | None:
    """Any header or property value as text PostgreSQL accepts: invalid bytes and NUL escaped."""
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return printable(bytes(value).decode("utf-8", "surrogateescape"))
    if isinstance(value, str):
        return printable(value)
    return printable(str(json_safe(value)))


def _time(value: Any) -> datetime | None:
    """An aware UTC time PostgreSQL and asyncpg can both hold, or None."""
    if isinstance(value, str | bytes):
        try:
            value = datetime.fromisoformat(_text(value) or "")
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    try:
        utc = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return utc if _EARLIEST < utc < _LATEST else None


def _int32(value: Any) -> int | None:
    """A count for an `integer` column: a real integer in its range (a boolean is not a count), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if INT32[0] <= value <= INT32[1] else None


def _reason(value: Any, otherwise: DeadLetterReason) -> DeadLetterReason:
    try:
        return DeadLetterReason(_text(value) or "")
    except ValueError:
        return otherwise


def broker_reason(said: str) -> DeadLetterReason:
    """RabbitMQ's own `x-death` reasons; anything else it might say is stored as a rejection."""
    reason = _reason(said, DeadLetterReason.rejected)
    return reason if reason in BROKER_REASONS else DeadLetterReason.rejected


def json_safe(value: Any, depth: int = 0) -> Any:
    """Header values as JSON PostgreSQL and orjson accept: text escaped, bytes as escaped text, times as ISO-8601,
    integers past 64 bits and decimals as text, nesting past MAX_JSON_DEPTH as a marker."""
    if depth > MAX_JSON_DEPTH:
        return f"[nested deeper than {MAX_JSON_DEPTH} levels: not stored]"
    # Text and plain dicts first, tested by exact type: nearly every header is one (capture's hot path), and an
    # isinstance against an ABC such as Mapping costs several times more.
    if type(value) is str:
        return printable(value)
    if type(value) is dict or isinstance(value, Mapping):
        return {
            printable(key) if type(key) is str else _text(key) or "": json_safe(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [json_safe(item, depth + 1) for item in value]
    if isinstance(value, bytes | bytearray | str):
        return _text(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if isinstance(value, Decimal):
        return str(value)
    return printable(str(value))


def decode_payload(body: bytes) -> Any:
    """The body as JSON when it is JSON that jsonb can hold, else None (the raw bytes are kept regardless)."""
    try:
        decoded = orjson.loads(body)
        encoded = orjson.dumps(decoded)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError, ValueError, TypeError):
        return None
    if b"\\u0000" in encoded:
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


def read_retry_link(headers: Mapping[str, Any]) -> RetryLink | None:
    entry, retry, signature = (headers.get(name) for name in (h.DLQ_ENTRY, h.DLQ_RETRY, h.DLQ_SIGNATURE))
    try:
        entry_id = uuid.UUID(_text(entry) or "")
    except ValueError:
        return None
    retry_id = _int32(retry)
    if retry_id is None or retry_id < 1 or not isinstance(signature, str | bytes):
        return None
    return RetryLink(entry_id, retry_id, _text(signature) or "")


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


def _first_text(values: Any) -> str | None:
    return _text(values[0]) if isinstance(values, list) and values else None


@dataclass(frozen=True)
class _Properties:
    """The AMQP properties, escaped and cut to their columns; what had to be cut, whole."""

    fitted: dict[str, str | None]
    whole: dict[str, str]


def _fit_properties(**properties: tuple[str | None, int]) -> _Properties:
    fitted: dict[str, str | None] = {}
    whole: dict[str, str] = {}
    for name, (value, length) in properties.items():
        text = _text(value)
        fitted[name] = _bounded(text, length)
        if text and len(text) > length:
            whole[name] = text
    return _Properties(fitted, whole)


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
    """Our consumer policy's headers win; a broker dead-letter is described by its first `x-death` entry.
    Never raises: every value is coerced to fit."""
    headers = headers if isinstance(headers, Mapping) else {}
    identity = _text(message_id) or hashlib.sha256(body).hexdigest()
    if h.REASON in headers:
        last = _time(headers.get(h.LAST_FAILURE_AT)) or now
        first = _time(headers.get(h.FIRST_FAILURE_AT)) or last
        queue = _text(headers.get(h.ORIGINAL_QUEUE)) or "unknown"
        exchange = _text(headers.get(h.ORIGINAL_EXCHANGE)) or ""
        routing_key = _text(headers.get(h.ORIGINAL_ROUTING_KEY)) or ""
        reason = _reason(headers.get(h.REASON), DeadLetterReason.error)
        error_type = _text(headers.get(h.ERROR_TYPE))
        error_message = _text(headers.get(h.ERROR_MESSAGE))
        stack_trace = _text(headers.get(h.ERROR_STACK))
        attempts = _int32(headers.get(h.ATTEMPTS))
        service = _text(headers.get(h.SERVICE))
        occurrence = [headers.get(h.LAST_FAILURE_AT), headers.get(h.ATTEMPTS)]
    else:
        death = _first_death(headers)
        said = _text(headers.get("x-first-death-reason")) or _text(death.get("reason")) or "rejected"
        delivery_count = _int32(headers.get("x-delivery-count"))
        last = first = _time(death.get("time")) or now
        queue = _text(headers.get("x-first-death-queue")) or _text(death.get("queue")) or "unknown"
        exchange = _text(headers.get("x-first-death-exchange")) or _text(death.get("exchange")) or ""
        routing_key = _first_text(death.get("routing-keys")) or ""
        reason = broker_reason(said)
        error_type, stack_trace, service = None, None, None
        error_message = f"dead-lettered by the broker: {said}"
        attempts = _int32(delivery_count + 1) if delivery_count is not None else _int32(death.get("count"))
        occurrence = [death.get("time"), death.get("count"), headers.get("x-delivery-count")]
    properties = _fit_properties(
        message_id=(message_id, _limit("message_id")), correlation_id=(correlation_id, _limit("correlation_id")),
        message_type=(message_type, _limit("message_type")), content_type=(content_type, _limit("content_type")),
        queue=(queue, _limit("queue_name")), exchange=(exchange, _limit("original_exchange")),
        routing_key=(routing_key, _limit("original_routing_key")),
    )  # fmt: skip
    stored_headers = json_safe(dict(headers))
    if properties.whole:
        stored_headers[ORIGINAL_PROPERTIES] = properties.whole
    fitted = properties.fitted
    return DeadLetterMessage(
        message_id=fitted["message_id"],
        correlation_id=fitted["correlation_id"],
        message_type=fitted["message_type"],
        content_type=fitted["content_type"],
        queue=fitted["queue"] or "unknown",
        exchange=fitted["exchange"] or "",
        routing_key=fitted["routing_key"] or "",
        reason=reason,
        error_type=_bounded(error_type, _limit("error_type")),
        error_message=error_message,
        stack_trace=stack_trace,
        attempts=attempts,
        service=_bounded(service, _limit("service")),
        first_failed_at=first,
        last_failed_at=last,
        retry_link=read_retry_link(headers),
        headers=stored_headers,
        raw_body=bytes(body),
        payload=decode_payload(body),
        identity=identity,
        occurrence="|".join(_text(part) or "" for part in occurrence),
    )


def mask_contacts(text: str) -> str:
    """`mask_pii`, exactly: the same text out for every text in."""
    return mask_pii(text) if "@" in text or _PHONE_RUN.search(text) else text


def mask(value: Any, key: str = "") -> Any:
    """Contact details hidden for lists: every email address and phone number wherever it is, and whatever the
    contact fields hold (a name has no shape to recognise). The audited detail view shows them."""
    if isinstance(value, Mapping):
        return {name: mask(item, str(name)) for name, item in value.items()}
    if isinstance(value, list):
        return [mask(item, key) for item in value]
    if isinstance(value, str):
        masked = mask_contacts(value)
        if key.lower() in SENSITIVE_KEYS and masked == value and value:
            return value[:1] + "***"
        return masked
    return value


def _masked_value(match: re.Match[str]) -> str:
    key, separator, value = match.groups()
    if not value or "***" in value:  # empty, or masked already by its shape
        return match.group(0)
    return f'"{key}"{separator}"{value[:1]}***"'


def mask_text(text: str) -> str:
    """`mask` for JSON text, or a prefix of it: shapes anywhere, and the values of the contact fields."""
    return _SENSITIVE_IN_JSON.sub(_masked_value, mask_contacts(text))


def _cut_at_token(text: str) -> str:
    """A prefix ends at the last JSON string or item boundary: no half of an address is left to escape masking."""
    boundary = max(text.rfind('"'), text.rfind(","))
    return text[:boundary] if boundary > 0 else ""


def preview(text: str | None, *, fetched_whole: bool, length: int) -> str | None:
    """At most `length` characters of a payload, masked; `…` says there is more. `fetched_whole` is False when
    `text` is itself a prefix of something longer."""
    if text is None:
        return None
    shown = mask_text(text if fetched_whole else _cut_at_token(text))
    if len(shown) > length:
        return shown[: length - len(CUT)] + CUT
    return shown if fetched_whole else shown + CUT
