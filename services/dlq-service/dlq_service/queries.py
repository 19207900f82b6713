"""Reading the dead-letter store: filtered keyset pages, groups by fingerprint, one entry with its history.

Each read model's fields are its SELECT list, so a list never fetches what it does not show.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from pydantic import JsonValue
from sqlalchemy import ColumnElement, Label, Select, Text, case, cast, func, literal, or_, select, true, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import SQLModel, col

from dlq_service.dead_letters import mask_contacts, preview
from libs import audit
from libs.db.keyset import BadCursor, decode_cursor, encode_cursor
from libs.db.tables import (
    DeadLetter,
    DeadLetterEvent,
    DeadLetterGroupCount,
    DeadLetterReason,
    DeadLetterRetry,
    DeadLetterStatus,
    Resolution,
    RetryOutcome,
)

MAX_SEARCH_WORDS = 10
PREVIEW_CHARS = 300


class EntryNotFound(Exception):
    pass


class EntryState(SQLModel):
    id: uuid.UUID
    status: DeadLetterStatus


class EntryFields(SQLModel):
    """What every view of an entry shows: the stored columns, no body, headers or stack trace."""

    id: uuid.UUID
    queue: str
    reason: DeadLetterReason
    status: DeadLetterStatus
    error_type: str | None
    error_message: str | None
    attempts: int | None
    retry_count: int
    fingerprint: str | None
    message_id: str | None
    correlation_id: str | None
    service: str | None
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    created_at: datetime
    resolution: Resolution | None


class DeadLetterSummary(EntryFields):
    """A row of the list: every text masked where it looks like an email address or phone number, and a bounded
    preview of the payload instead of the payload (the body when it is not JSON)."""

    payload_preview: str | None
    body_bytes: int


class DeadLetterPage(SQLModel):
    items: list[DeadLetterSummary]
    next_cursor: str | None


class DeadLetterRecord(EntryFields):
    """Everything captured of an entry, unmasked, except the raw body."""

    payload: JsonValue
    stack_trace: str | None
    headers: dict[str, JsonValue]
    original_exchange: str | None
    original_routing_key: str | None
    message_type: str | None
    content_type: str | None
    resolved: bool | None
    resolved_at: datetime | None
    resolved_by: uuid.UUID | None
    job_id: str | None


class FailureRecord(SQLModel):
    reason: DeadLetterReason
    error_type: str | None
    error_message: str | None
    attempts: int | None
    failed_at: datetime
    received_at: datetime


class RetryRecord(SQLModel):
    redrive_id: uuid.UUID | None
    requested_by: str
    requested_at: datetime
    outcome: RetryOutcome
    outcome_at: datetime | None


class DeadLetterDetail(DeadLetterRecord):
    raw_body_base64: str
    failures: list[FailureRecord]
    retries: list[RetryRecord]


class DeadLetterGroup(SQLModel):
    queue: str
    fingerprint: str | None
    count: int
    first_seen: datetime | None
    last_seen: datetime | None
    error_type: str | None
    sample_error: str | None


class DeadLetterGroups(SQLModel):
    groups: list[DeadLetterGroup]


def selected(table: type[SQLModel], model: type[SQLModel], **renamed: Any) -> list[Label[Any]]:
    """The SELECT list of a read model: each field is the table's column of the same name, or the one renamed."""
    return [col(renamed[name] if name in renamed else getattr(table, name)).label(name) for name in model.model_fields]


# The API says `queue` where the table says `queue_name`.
_PREVIEW_SOURCE = PREVIEW_CHARS * 4
"""Characters fetched for a preview: masking shortens text, so more is read than is shown."""
SUMMARY = select(
    *selected(DeadLetter, EntryFields, queue=DeadLetter.queue_name),
    func.left(cast(col(DeadLetter.payload), Text), _PREVIEW_SOURCE + 1).label("payload_text"),
    case(
        (col(DeadLetter.payload).is_(None), func.substring(col(DeadLetter.raw_body), 1, _PREVIEW_SOURCE + 1)),
        else_=None,
    ).label("body_head"),
    func.octet_length(col(DeadLetter.raw_body)).label("body_bytes"),
)
_RECORD = select(*selected(DeadLetter, DeadLetterRecord, queue=DeadLetter.queue_name), col(DeadLetter.raw_body))
_FAILURES = select(*selected(DeadLetterEvent, FailureRecord)).order_by(col(DeadLetterEvent.id))
_RETRIES = select(*selected(DeadLetterRetry, RetryRecord)).order_by(col(DeadLetterRetry.id))
_NEWEST_FIRST = (col(DeadLetter.created_at).desc(), col(DeadLetter.id).desc())
_LATEST_FAILURE_FIRST = (col(DeadLetter.last_failed_at).desc(), col(DeadLetter.id).desc())
"""A time window's order: its rows read from idx_dlq_last_failed in order, however wide the window."""

# Written into the SQL, not bound: PostgreSQL uses a partial index (WHERE status <> 'resolved') only for a
# condition it can prove from the statement's text.
UNRESOLVED = col(DeadLetter.status) != literal(DeadLetterStatus.resolved.value, literal_execute=True)
OF_GROUP = (
    col(DeadLetter.queue_name) == col(DeadLetterGroupCount.queue_name),
    # '' is the group of entries without a fingerprint (capture always gives one): counted, times unknown.
    col(DeadLetter.fingerprint) == func.nullif(col(DeadLetterGroupCount.fingerprint), ""),
    UNRESOLVED,
)
_GROUP_LATEST = (
    select(
        col(DeadLetter.last_failed_at).label("last_seen"),
        col(DeadLetter.error_type).label("error_type"),
        col(DeadLetter.error_message).label("sample_error"),
    )
    .where(*OF_GROUP)
    .order_by(col(DeadLetter.last_failed_at).desc().nulls_last())
    .limit(1)
    .lateral("latest")
)
_GROUP_FIRST = select(func.min(col(DeadLetter.first_failed_at))).where(*OF_GROUP).scalar_subquery()
# The count per group is kept by triggers (dead_letter_groups); each group's times and latest error are one probe
# of idx_dlq_group_latest and one of idx_dlq_group_first: no scan of the entries, however many there are.
GROUPS = (
    select(
        col(DeadLetterGroupCount.queue_name).label("queue"),
        func.nullif(col(DeadLetterGroupCount.fingerprint), "").label("fingerprint"),
        col(DeadLetterGroupCount.unresolved).label("count"),
        _GROUP_FIRST.label("first_seen"),
        _GROUP_LATEST.c.last_seen,
        _GROUP_LATEST.c.error_type,
        _GROUP_LATEST.c.sample_error,
    )
    .select_from(DeadLetterGroupCount)
    .outerjoin(_GROUP_LATEST, true())
    .where(col(DeadLetterGroupCount.unresolved) > 0)
    .order_by(col(DeadLetterGroupCount.unresolved).desc(), _GROUP_LATEST.c.last_seen.desc())
)


def utc_time(value: datetime | None) -> datetime | None:
    """A time as UTC, naive ones taken as UTC. Raises ValueError for one that is out of range once in UTC
    (`9999-12-31T23:59:59-14:00`), which the database driver could not send."""
    if value is None:
        return None
    try:
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("is out of range once converted to UTC") from None


def search_words(text: str | None) -> list[str]:
    """Free text as the words that must all appear; at most ten of them."""
    return text.split()[:MAX_SEARCH_WORDS] if text else []


def like_pattern(word: str) -> str:
    """`word` anywhere, with LIKE's own characters in it matched literally (backslash is PostgreSQL's escape)."""
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclasses.dataclass(frozen=True)
class Filters:
    queue: str | None = None
    status: DeadLetterStatus | None = None
    reason: DeadLetterReason | None = None
    error_type: str | None = None
    fingerprint: str | None = None
    failed_from: datetime | None = None
    failed_to: datetime | None = None
    text: str | None = None

    @property
    def windowed(self) -> bool:
        """A time window is given: the list is newest failure first (last_failed_at), not newest entry first."""
        return self.failed_from is not None or self.failed_to is not None

    def conditions(self) -> list[ColumnElement[bool]]:
        """Joined with AND: equal columns, a half-open time window, and every search word somewhere."""
        equal = ((DeadLetter.queue_name, self.queue), (DeadLetter.status, self.status),
                 (DeadLetter.reason, self.reason), (DeadLetter.error_type, self.error_type),
                 (DeadLetter.fingerprint, self.fingerprint))  # fmt: skip
        found = [col(column) == value for column, value in equal if value is not None]
        if self.failed_from is not None:
            found.append(col(DeadLetter.last_failed_at) >= self.failed_from)
        if self.failed_to is not None:
            found.append(col(DeadLetter.last_failed_at) < self.failed_to)
        for word in search_words(self.text):
            pattern = like_pattern(word)
            found.append(
                or_(col(DeadLetter.error_message).ilike(pattern), cast(col(DeadLetter.payload), Text).ilike(pattern))
            )
        return found


_ENTRY_FIELDS = tuple(EntryFields.model_fields)
_MASKED_FIELDS = tuple(
    name for name, field in EntryFields.model_fields.items() if field.annotation in (str, str | None)
)
"""The entry's free texts, masked in a list: the rest are ids, numbers, times and enums (no contact data)."""
_NAMES = frozenset({"queue", "error_type", "fingerprint", "service"})
"""Texts a few values repeat through every page: masked once per value."""


@functools.lru_cache(maxsize=4096)
def _masked_name(text: str) -> str:
    return mask_contacts(text)


def summary(row: Mapping[str, Any]) -> DeadLetterSummary:
    """A list row: texts masked, the payload (or the body, when it is not JSON) as a masked, bounded preview."""
    return DeadLetterSummary.model_validate(summary_fields(row))


def summary_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """`summary`'s fields, for a page validated whole (one validation instead of one per row)."""
    head = row["body_head"]
    text = row["payload_text"] or (bytes(head).decode("utf-8", "replace") if head is not None else None)
    fields = {name: row[name] for name in _ENTRY_FIELDS}
    for name in _MASKED_FIELDS:
        value = fields[name]
        if value:
            fields[name] = _masked_name(value) if name in _NAMES else mask_contacts(value)
    fields["payload_preview"] = preview(text, fetched_whole=len(text or "") <= _PREVIEW_SOURCE, length=PREVIEW_CHARS)
    fields["body_bytes"] = row["body_bytes"] or 0
    return fields


def page_query(filters: Filters, limit: int, cursor: str | None) -> Select[Any]:
    """Newest first: by arrival (created_at), or, within a time window, by latest failure (last_failed_at, which
    the window filters, so a page reads only its own rows from idx_dlq_last_failed, whatever the window's width).
    Keyset pages on that time and the id; one row more than the page tells whether another follows. Raises
    BadCursor for a cursor this API did not return."""
    order = _LATEST_FAILURE_FIRST if filters.windowed else _NEWEST_FIRST
    query = SUMMARY.where(*filters.conditions()).order_by(*order).limit(limit + 1)
    if cursor:
        cursor_at, cursor_id = decode_cursor(cursor)
        try:
            cursor_at = utc_time(cursor_at) or cursor_at
        except ValueError:
            raise BadCursor("cursor is not one this API returned") from None
        query = query.where(tuple_(order[0].element, col(DeadLetter.id)) < tuple_(cursor_at, cursor_id))
    return query


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for one read statement, outside any transaction: a single statement sees one snapshot anyway,
    and the BEGIN and ROLLBACK around it would be two more round trips (most of a short read's own cost)."""
    async with engine.connect() as connection:
        yield await connection.execution_options(isolation_level="AUTOCOMMIT")


async def list_page(engine: AsyncEngine, filters: Filters, limit: int, cursor: str | None) -> DeadLetterPage:
    """Raises BadCursor for a cursor this API did not return."""
    query = page_query(filters, limit, cursor)
    async with reading(engine) as connection:
        rows = (await connection.execute(query)).mappings().all()
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        at = last["last_failed_at"] if filters.windowed else last["created_at"]
        next_cursor = encode_cursor(at or last["created_at"], last["id"])
    return DeadLetterPage.model_validate({"items": [summary_fields(row) for row in rows[:limit]],
                                          "next_cursor": next_cursor})  # fmt: skip


async def selected_ids(connection: AsyncConnection, filters: Filters, limit: int) -> list[uuid.UUID]:
    """The failed entries a filter matches now: a redrive's fixed selection, oldest first."""
    failed = dataclasses.replace(filters, status=DeadLetterStatus.failed)
    query = (
        select(col(DeadLetter.id))
        .where(*failed.conditions())
        .order_by(col(DeadLetter.created_at), col(DeadLetter.id))
        .limit(limit)
    )
    return list((await connection.scalars(query)).all())


async def groups(engine: AsyncEngine) -> DeadLetterGroups:
    async with reading(engine) as connection:
        rows = (await connection.execute(GROUPS)).mappings().all()
    groups = [{**row, "sample_error": mask_contacts(row["sample_error"] or "") or None} for row in rows]
    return DeadLetterGroups.model_validate({"groups": groups})


async def view(engine: AsyncEngine, entry_id: uuid.UUID, actor: str) -> DeadLetterDetail:
    """Everything captured, unmasked, with every failure and retry; the viewing is audited in the same transaction."""
    async with engine.begin() as connection:
        row = (await connection.execute(_RECORD.where(col(DeadLetter.id) == entry_id))).mappings().first()
        if row is None:
            raise EntryNotFound(f"dead letter {entry_id} not found")
        failures = await connection.execute(_FAILURES.where(col(DeadLetterEvent.entry_id) == entry_id))
        retries = await connection.execute(_RETRIES.where(col(DeadLetterRetry.entry_id) == entry_id))
        entry = DeadLetterDetail.model_validate(
            {**row, "raw_body_base64": base64.b64encode(bytes(row["raw_body"])).decode(),
             "failures": failures.mappings().all(), "retries": retries.mappings().all()}
        )  # fmt: skip
        await audit.record(
            connection, actor=actor, action="dlq.entry_viewed", entity_type="dead_letter", entity_id=str(entry_id)
        )
    return entry
