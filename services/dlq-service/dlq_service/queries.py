"""Reading the dead-letter store: filtered keyset pages, groups by fingerprint, one entry with its history.

Each read model's fields are its SELECT list, so a list never fetches what it does not show.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import orjson
from pydantic import JsonValue
from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    Label,
    Select,
    String,
    Text,
    Uuid,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSON, JSONB, aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Mapped
from sqlalchemy.sql.elements import UnaryExpression
from sqlmodel import SQLModel, col

from dlq_service.dead_letters import mask_contacts, preview
from libs.db.keyset import BadCursor, decode_cursor, encode_cursor
from libs.db.tables import (
    AuditEntry,
    DeadLetter,
    DeadLetterEvent,
    DeadLetterGroupCount,
    DeadLetterReason,
    DeadLetterRetry,
    DeadLetterStatus,
    Resolution,
    RetryOutcome,
)
from libs.db.tables.dead_letters import search_query
from libs.logging import current_correlation_id

MAX_SEARCH_WORDS = 10
PREVIEW_CHARS = 300
WORD_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7), timedelta(days=30))
"""How far back from where its page starts each statement of a search for several words looks, newest first; the
last statement takes everything older. No index gives a word's entries newest first: within a window PostgreSQL
ANDs the words' posting lists with the window's blocks (idx_dlq_created_brin) and sorts what is in both, so a page
costs the words' posting lists once per window it needs (about 10 ms for two words of 50,000 entries each), never an
unbounded walk of the newest entries that lack a word (filtering 135,000 of them one by one took 300 ms): the
windows start where WORD_WALK's walk stopped. A window costs what its entries having the words cost to fetch, not
what it holds (the list's index gave PostgreSQL every entry of an hour's burst of 300,000: 40 ms, with the blocks
16). An hour first: after such a burst a page found in the hour before it costs one window; starting with a day cost
22 ms there, and saved a window only where the day before the burst held none of the words."""


WORD_WALK = 2_000
"""Entries of the list a search for several words reads one by one, newest first, before its windows: a common
pair fills its page there (at a million entries, a pair every twentieth entry: 1,066 entries walked, 0.6 ms, where
ANDing the two words' posting lists of 50,000 entries took 10 ms in every window), and a rare pair costs a walk
of at most this many entries (about 1 ms, its rows in memory) before the windows take over where it stopped."""


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
_ENTRY_ID = bindparam("entry_id", type_=Uuid())


def _json_list(table: type[SQLModel], model: type[SQLModel], entry: Any, order: Any) -> Any:
    """The entry's rows of `table` as a JSON array of `model`'s fields, in `order`."""
    fields = [part for name in model.model_fields for part in (literal(name, String()), col(getattr(table, name)))]
    rows = func.json_agg(aggregate_order_by(func.json_build_object(*fields), col(order)))
    return select(func.coalesce(rows, func.json_build_array(), type_=JSON())).where(col(entry) == _ENTRY_ID)


# An entry's view is audited by the statement that reads it (one round trip, no BEGIN or COMMIT): the audit row
# is written when, and only when, the entry is there to be shown.
_VIEWED = (
    insert(AuditEntry)
    .from_select(
        [col(AuditEntry.actor), col(AuditEntry.action), col(AuditEntry.entity_type), col(AuditEntry.entity_id),
         col(AuditEntry.correlation_id), col(AuditEntry.details)],
        select(
            bindparam("actor", type_=String()), literal("dlq.entry_viewed", String()),
            literal("dead_letter", String()), cast(_ENTRY_ID, String()), bindparam("correlation_id", type_=String()),
            literal({}, JSONB()),
        ).where(col(DeadLetter.id) == _ENTRY_ID),
    )
    .cte("viewed")
)  # fmt: skip
_DETAIL = (
    select(
        *selected(DeadLetter, DeadLetterRecord, queue=DeadLetter.queue_name),
        col(DeadLetter.raw_body),
        _json_list(DeadLetterEvent, FailureRecord, DeadLetterEvent.entry_id, DeadLetterEvent.id)
        .scalar_subquery()
        .label("failures"),
        _json_list(DeadLetterRetry, RetryRecord, DeadLetterRetry.entry_id, DeadLetterRetry.id)
        .scalar_subquery()
        .label("retries"),
    )
    .where(col(DeadLetter.id) == _ENTRY_ID)
    .add_cte(_VIEWED)
)
_NEWEST_FIRST = (col(DeadLetter.created_at).desc(), col(DeadLetter.id).desc())
_LATEST_FAILURE_FIRST = (col(DeadLetter.last_failed_at).desc(), col(DeadLetter.id).desc())
"""A time window's order: its rows read from idx_dlq_last_failed in order, however wide the window."""

# Written into the SQL, not bound: PostgreSQL uses a partial index (WHERE status <> 'resolved') only for a
# condition it can prove from the statement's text.
UNRESOLVED = col(DeadLetter.status) != literal(DeadLetterStatus.resolved.value, literal_execute=True)
# The count, times and latest error of each group are kept by triggers (dead_letter_groups, migration 0012): the
# read is a scan of the groups, however many entries they hold (two index probes per group were 7 ms for 246).
GROUPS = (
    select(
        col(DeadLetterGroupCount.queue_name).label("queue"),
        func.nullif(col(DeadLetterGroupCount.fingerprint), "").label("fingerprint"),
        col(DeadLetterGroupCount.unresolved).label("count"),
        col(DeadLetterGroupCount.first_seen).label("first_seen"),
        col(DeadLetterGroupCount.last_seen).label("last_seen"),
        col(DeadLetterGroupCount.error_type).label("error_type"),
        col(DeadLetterGroupCount.sample_error).label("sample_error"),
    )
    .where(col(DeadLetterGroupCount.unresolved) > 0)
    .order_by(col(DeadLetterGroupCount.unresolved).desc(), col(DeadLetterGroupCount.last_seen).desc())
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


def has_words(words: ColumnElement[Any] | Mapped[Any], text: str | ColumnElement[str]) -> ColumnElement[bool]:
    """Every word of `text` (the search's words, joined by spaces) among an entry's stored words, whole."""
    return words.bool_op("@@")(search_query(text))


def like_pattern(word: str) -> str:
    """`word` anywhere, with LIKE's own characters in it matched literally (backslash is PostgreSQL's escape)."""
    return "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _condition(equal: Mapping[str, Any], name: str, value: Any) -> ColumnElement[bool]:
    """The condition of the filter `name`, on `value` or (None) on a value bound when the statement runs."""
    if name in equal:
        return col(equal[name]) == bindparam(name, value)
    if name in ("failed_from", "failed_to"):
        failed_at = col(DeadLetter.last_failed_at)
        return failed_at >= bindparam(name, value) if name == "failed_from" else failed_at < bindparam(name, value)
    text = bindparam(name, value, type_=String())
    if name == "words":
        return has_words(col(DeadLetter.search_words), text)
    return or_(col(DeadLetter.error_message).ilike(text), cast(col(DeadLetter.payload), Text).ilike(text))


@dataclasses.dataclass(frozen=True)
class Filters:
    EQUAL: ClassVar[Mapping[str, Any]] = {
        "queue": DeadLetter.queue_name,
        "status": DeadLetter.status,
        "reason": DeadLetter.reason,
        "error_type": DeadLetter.error_type,
        "fingerprint": DeadLetter.fingerprint,
    }
    """The filters that are an equality on a column, by name."""

    queue: str | None = None
    status: DeadLetterStatus | None = None
    reason: DeadLetterReason | None = None
    error_type: str | None = None
    fingerprint: str | None = None
    failed_from: datetime | None = None
    failed_to: datetime | None = None
    text: str | None = None
    substring: bool = False
    """The text's words are searched as substrings (what a search falls back to when no entry has them whole)."""

    @property
    def windowed(self) -> bool:
        """A time window is given: the list is newest failure first (last_failed_at), not newest entry first."""
        return self.failed_from is not None or self.failed_to is not None

    def values(self) -> dict[str, Any]:
        """The given filters' values by the names `bound_conditions` binds them to."""
        given = {name: getattr(self, name) for name in self.EQUAL if getattr(self, name) is not None}
        given |= {name: getattr(self, name) for name in ("failed_from", "failed_to") if getattr(self, name)}
        words = search_words(self.text)
        if words and not self.substring:
            given["words"] = " ".join(words)
        for number, word in enumerate(words if self.substring else ()):
            given[f"word_{number}"] = like_pattern(word)
        return given

    @classmethod
    def bound_conditions(cls, names: Sequence[str]) -> list[ColumnElement[bool]]:
        """The conditions of the filters named (`values`), their values bound when the statement runs: equal
        columns, a half-open time window, and every search word, whole (one GIN lookup for them all) or each as a
        substring. Joined with AND."""
        return [_condition(cls.EQUAL, name, None) for name in names]

    def conditions(self) -> list[ColumnElement[bool]]:
        """`bound_conditions` with this list's values in them."""
        return [_condition(self.EQUAL, name, value) for name, value in self.values().items()]


_ENTRY_FIELDS = tuple(EntryFields.model_fields)
_MASKED_FIELDS = tuple(
    name for name, field in EntryFields.model_fields.items() if field.annotation in (str, str | None)
)
"""The entry's free texts, masked in a list: the rest are ids, numbers, times and enums (no contact data)."""
_MASKED_AT = tuple(_ENTRY_FIELDS.index(name) for name in _MASKED_FIELDS)
_ID, _CREATED_AT, _LAST_FAILED_AT = (_ENTRY_FIELDS.index(name) for name in ("id", "created_at", "last_failed_at"))
_PAYLOAD_TEXT, _BODY_HEAD, _BODY_BYTES = range(len(_ENTRY_FIELDS), len(_ENTRY_FIELDS) + 3)
SummaryRow = Sequence[Any]
"""A row of SUMMARY as it comes: EntryFields' values in order, then the payload's text, the body's first bytes (when
the payload is not JSON) and the body's size."""
SUMMARIES_KEPT = 4096
"""List rows a process keeps shown (the row as read, its fields as listed): a page asked again, or an entry on
several pages of filters, is not masked again while its row is unchanged. About 3 kB each."""
TEXTS_KEPT = 4096
"""Masked texts a process keeps: queue names, error types and messages, message ids repeat through many rows."""


@functools.lru_cache(maxsize=TEXTS_KEPT)
def _masked(text: str) -> str:
    return mask_contacts(text)


def summary(row: SummaryRow) -> DeadLetterSummary:
    """A list row: texts masked, the payload (or the body, when it is not JSON) as a masked, bounded preview."""
    return DeadLetterSummary.model_validate(summary_fields(row))


@functools.lru_cache(maxsize=SUMMARIES_KEPT)
def summary_fields(row: SummaryRow) -> dict[str, Any]:
    """`summary`'s fields, for a page validated or written whole (one validation instead of one per row): a pure
    function of the row, kept for the rows read again (masking was the largest part of a page's own CPU time).
    The dict is shared by every page that shows the row: read only."""
    fields = dict(zip(_ENTRY_FIELDS, row, strict=False))
    for name, at in zip(_MASKED_FIELDS, _MASKED_AT, strict=True):
        if value := row[at]:
            fields[name] = _masked(value)
    head = row[_BODY_HEAD]
    text = row[_PAYLOAD_TEXT] or (bytes(head).decode("utf-8", "replace") if head is not None else None)
    fields["payload_preview"] = preview(text, fetched_whole=len(text or "") <= _PREVIEW_SOURCE, length=PREVIEW_CHARS)
    fields["body_bytes"] = row[_BODY_BYTES] or 0
    return fields


def summaries(rows: Sequence[SummaryRow]) -> list[dict[str, Any]]:
    """`summary_fields` of a page's rows."""
    return [summary_fields(row) for row in rows]


def after_key(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """Where a page starts: after the entry the cursor names. Raises BadCursor for a cursor this API did not
    return."""
    if not cursor:
        return None
    cursor_at, cursor_id = decode_cursor(cursor)
    try:
        return utc_time(cursor_at) or cursor_at, cursor_id
    except ValueError:
        raise BadCursor("cursor is not one this API returned") from None


def _order(filters: Filters) -> tuple[UnaryExpression[Any], UnaryExpression[Any]]:
    return _LATEST_FAILURE_FIRST if filters.windowed else _NEWEST_FIRST


_AFTER_AT = bindparam("after_at", type_=DateTime(timezone=True))
_AFTER_ID = bindparam("after_id", type_=Uuid())
_PAGE_ROWS = bindparam("page_rows", type_=Integer())
_WORDS = bindparam("words", type_=String())
# Written into the SQL: a LIMIT PostgreSQL does not know when it plans would have it sort the whole list instead of
# reading the newest entries from the list's index.
_WALK_ROWS = bindparam("walk_rows", type_=Integer(), literal_execute=True)

Bound = tuple[Select[Any], dict[str, Any]]
"""A statement and the values to bind to it when it runs."""

_STATEMENTS: dict[tuple[Any, ...], Select[Any]] = {}
"""Each read's statement per combination of filters given (which of them, how many words, a cursor or not),
built once: SQLAlchemy then finds its compiled form without walking the statement again for its cache key
(building and walking a fresh statement per request cost more CPU than PostgreSQL spends running it)."""


def _window_condition(at: ColumnElement[datetime], name: str) -> ColumnElement[bool]:
    bound = bindparam(name, type_=DateTime(timezone=True), literal_execute=True)
    return at >= bound if name == "window_from" else at < bound


def _after_cursor(order: tuple[UnaryExpression[Any], ...]) -> list[ColumnElement[bool]]:
    """The keyset condition: entries past the cursor's (time, id) in the list's order, bound when it runs."""
    return [tuple_(order[0].element, col(DeadLetter.id)) < tuple_(_AFTER_AT, _AFTER_ID)]


def _bind_cursor(given: dict[str, Any], after: tuple[datetime, uuid.UUID] | None) -> None:
    if after is not None:
        given["after_at"], given["after_id"] = after


def _bound(
    read: Callable[..., Select[Any]],
    filters: Filters,
    after: tuple[datetime, uuid.UUID] | None,
    window: tuple[str, ...] = (),
    **values: Any,
) -> Bound:
    """`read`'s statement for these filters, kept, and the values to bind: the filters', the cursor's, `values`
    (`window` names the time window's bounds among them: window_from, window_to)."""
    given = filters.values()
    key = (read, type(filters), tuple(given), filters.windowed, after is not None, window)
    if key not in _STATEMENTS:
        order = _order(filters)
        keyset = _after_cursor(order) if after else []
        bounds = [_window_condition(order[0].element, name) for name in window]
        _STATEMENTS[key] = read(order, [*type(filters).bound_conditions(tuple(given)), *keyset, *bounds])
    _bind_cursor(given, after)
    return _STATEMENTS[key], given | values


def _page_read(order: tuple[UnaryExpression[Any], ...], conditions: list[ColumnElement[bool]]) -> Select[Any]:
    return SUMMARY.where(*conditions).order_by(*order).limit(_PAGE_ROWS)


def _page_by_ids_read(order: tuple[UnaryExpression[Any], ...], conditions: list[ColumnElement[bool]]) -> Select[Any]:
    """A page filtered by equality: its ids first, then their rows. Asked for whole rows, PostgreSQL weighed the
    heap fetches: for a common value (a failure group of 40% of the entries, a queue) it walked idx_dlq_list, whose
    order is the heap's, expecting a match every few entries, and filtered the 135,000 newest entries of other
    groups to find 51 (481 ms). Asked for ids, the filter's own index answers alone, in the page's order (an
    index-only scan), and the rows are fetched by id (0.7 ms in all, against 0.2 ms for the rows read straight
    from the filter's index when PostgreSQL picks it: a list without an equality filter, whose index is the only
    one that fits, reads its rows directly)."""
    page = select(col(DeadLetter.id)).where(*conditions).order_by(*order).limit(_PAGE_ROWS).subquery("page")
    return SUMMARY.join(page, col(DeadLetter.id) == page.c.id).order_by(*order)


def page_query(filters: Filters, limit: int, cursor: str | None) -> Select[Any]:
    """Newest first: by arrival (created_at), or, within a time window, by latest failure (last_failed_at, which
    the window filters, so a page reads only its own rows from idx_dlq_last_failed, whatever the window's width).
    Keyset pages on that time and the id; one row more than the page tells whether another follows. Raises
    BadCursor for a cursor this API did not return."""
    statement, values = page_read(filters, limit, after_key(cursor))
    return statement.params(values)


def page_read(filters: Filters, limit: int, after: tuple[datetime, uuid.UUID] | None) -> Bound:
    equal = any(getattr(filters, name) is not None for name in filters.EQUAL)
    return _bound(_page_by_ids_read if equal else _page_read, filters, after, page_rows=limit + 1)


def window_read(
    filters: Filters,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
    since: datetime | None,
    before: datetime | None,
) -> Bound:
    """A page of the list among its entries from `since` (None: the oldest) to before `before` (None: the newest)
    in the list's order, its ids first. The window's times are written into the statement: PostgreSQL plans each
    window with its own width (a window that holds a few hundred entries is read in order, a wider one is ANDed
    with the word index), where a plan kept for bound values would fit one width to all."""
    window = {name: value for name, value in (("window_from", since), ("window_to", before)) if value is not None}
    return _bound(_page_by_ids_read, filters, after, tuple(window), page_rows=limit + 1, **window)


def walk_read(filters: Filters, limit: int, after: tuple[datetime, uuid.UUID] | None) -> Bound:
    """A page of the list among its next WORD_WALK entries (after `after`, by every filter but the words): those
    entries read in the list's order from its index, then tested for the words one by one."""
    given = filters.values()
    key = ("walk", type(filters), tuple(given), filters.windowed, after is not None)
    if key not in _STATEMENTS:
        order = _order(filters)
        listed = [name for name in given if name != "words"]
        keyset = _after_cursor(order) if after else []
        at = order[0].element
        recent = (
            select(col(DeadLetter.id), at.label("at"), col(DeadLetter.search_words))
            .where(*type(filters).bound_conditions(listed), *keyset)
            .order_by(*order)
            .limit(_WALK_ROWS)
            .subquery("recent")
        )
        page = (
            select(recent.c.id)
            .where(has_words(recent.c.search_words, _WORDS))
            .order_by(recent.c.at.desc(), recent.c.id.desc())
            .limit(_PAGE_ROWS)
            .subquery("page")
        )
        _STATEMENTS[key] = SUMMARY.join(page, col(DeadLetter.id) == page.c.id).order_by(*order)
    _bind_cursor(given, after)
    return _STATEMENTS[key], given | {"page_rows": limit + 1, "walk_rows": WORD_WALK}


def walk_end_read(filters: Filters, after: tuple[datetime, uuid.UUID] | None) -> Bound:
    """The last entry a walk read (the WORD_WALK-th after `after`, by every filter but the words), as the list's
    cursor key; no row when fewer remained (the walk read them all)."""
    given = {name: value for name, value in filters.values().items() if name != "words"}
    key = ("walk end", type(filters), tuple(given), filters.windowed, after is not None)
    if key not in _STATEMENTS:
        order = _order(filters)
        keyset = _after_cursor(order) if after else []
        _STATEMENTS[key] = (
            select(order[0].element, col(DeadLetter.id))
            .where(*type(filters).bound_conditions(tuple(given)), *keyset)
            .order_by(*order)
            .offset(_WALK_ROWS - 1)
            .limit(1)
        )
    _bind_cursor(given, after)
    return _STATEMENTS[key], given | {"walk_rows": WORD_WALK}


def word_windows(start: datetime, floor: datetime | None) -> Iterator[tuple[datetime | None, datetime | None]]:
    """The windows of WORD_WINDOWS back from `start`, newest first, as (since, before): the first open towards the
    newest, the last towards the oldest, so that together they hold every entry, whatever the clocks said; none
    past `floor`, the list's own lower bound."""
    before = None
    for reach in WORD_WINDOWS:
        try:
            since = start - reach
        except OverflowError:
            break
        if floor is not None and since <= floor:
            break
        yield since, before
        before = since
    yield None, before


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for one read statement, outside any transaction: a single statement sees one snapshot anyway,
    and the BEGIN and ROLLBACK around it would be two more round trips (most of a short read's own cost)."""
    async with engine.connect() as connection:
        yield await connection.execution_options(isolation_level="AUTOCOMMIT")


Rows = list[dict[str, Any]]


async def _rows(connection: AsyncConnection, query: Select[Any], values: Mapping[str, Any] | None = None) -> Rows:
    """The rows as dicts by column name, each made in one go from the row's tuple (looking its values up by name
    through SQLAlchemy's row mappings cost more than masking them). The names as plain text: a lateral subquery's
    columns are keyed by SQLAlchemy's own str subclass, which orjson refuses as a key."""
    result = await connection.execute(query, values)
    names = tuple(map(str, result.keys()))
    return [dict(zip(names, row, strict=True)) for row in result]


async def _summary_rows(
    connection: AsyncConnection, query: Select[Any], values: Mapping[str, Any] | None = None
) -> list[SummaryRow]:
    """A page's rows as they come (SUMMARY's columns, in order): made into fields only when not kept already."""
    return list(await connection.execute(query, values))


async def _any_has_words(connection: AsyncConnection, filters: Filters) -> bool:
    return bool(await connection.scalar(select(exists().where(*filters.conditions()))))


async def _page_rows(
    connection: AsyncConnection, filters: Filters, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[SummaryRow]:
    """Up to `limit` + 1 rows. A search is by whole words first, by substrings when no entry of the list has the
    words (on a later page: no entry at all, so a search's pages never change meaning). One word is one statement:
    PostgreSQL knows how common each word is and reads the list's index or the word index accordingly. For several
    words it multiplies their frequencies, as if words never came together, and would fetch and sort every entry
    of a common pair from the word index, or walk the list's index testing every entry: several words are looked
    for window by window (WORD_WINDOWS), newest first."""
    words = search_words(filters.text)
    if len(words) < 2 or filters.substring:
        rows = await _summary_rows(connection, *page_read(filters, limit, after))
    else:
        rows = await _windowed_rows(connection, filters, limit, after)
    if (
        words
        and not filters.substring
        and not rows
        and (after is None or not await _any_has_words(connection, filters))
    ):
        return await _summary_rows(connection, *page_read(dataclasses.replace(filters, substring=True), limit, after))
    return rows


async def _windowed_rows(
    connection: AsyncConnection, filters: Filters, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[SummaryRow]:
    """The page from a walk of the next WORD_WALK entries, then window after window (WORD_WINDOWS) from where the
    walk stopped, each asked for what the page still lacks: the walk and the windows follow one another in the
    list's order, so their rows, joined, are the list's rows."""
    rows = await _summary_rows(connection, *walk_read(filters, limit, after))
    if len(rows) > limit:
        return rows
    walked = (await connection.execute(*walk_end_read(filters, after))).first()
    if walked is None:
        return rows
    walked_at, walked_id = tuple(walked)
    after = (walked_at, walked_id)
    for since, before in word_windows(walked_at, filters.failed_from if filters.windowed else None):
        # A window closed towards the newest ends before the walk's last entry, so it needs no cursor; given one as
        # well, PostgreSQL started its scan of the list's index at the cursor and tested every older entry against
        # the window's bound (the rest of a million: 26 ms, where the window held 363 entries).
        since_walk = after if before is None else None
        rows += await _summary_rows(connection, *window_read(filters, limit - len(rows), since_walk, since, before))
        if len(rows) > limit:
            break
    return rows


def as_json(document: Mapping[str, Any]) -> bytes:
    """A read model's JSON written straight from the values it is made of (ids, times, enums, numbers, texts), as
    the API would write the validated model (times in UTC with `Z`): validating and dumping a model per row was
    most of a page's own CPU time."""
    return orjson.dumps(document, default=_uuid_text, option=orjson.OPT_UTC_Z)


def _uuid_text(value: Any) -> str:
    """asyncpg's ids are its own subclass of uuid.UUID, which orjson does not take for one."""
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


@dataclasses.dataclass(frozen=True)
class ListedPage:
    """A page of the list as its DeadLetterPage's fields: for the API as JSON, for the console as the model."""

    items: list[dict[str, Any]]
    next_cursor: str | None

    def json(self) -> bytes:
        return as_json({"items": self.items, "next_cursor": self.next_cursor})

    def model(self) -> DeadLetterPage:
        return DeadLetterPage.model_validate({"items": self.items, "next_cursor": self.next_cursor})


async def listed_page(engine: AsyncEngine, filters: Filters, limit: int, cursor: str | None) -> ListedPage:
    """Raises BadCursor for a cursor this API did not return."""
    after = after_key(cursor)
    async with reading(engine) as connection:
        rows = await _page_rows(connection, filters, limit, after)
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        at = last[_LAST_FAILED_AT] if filters.windowed else last[_CREATED_AT]
        next_cursor = encode_cursor(at or last[_CREATED_AT], last[_ID])
    return ListedPage(summaries(rows[:limit]), next_cursor)


async def list_page(engine: AsyncEngine, filters: Filters, limit: int, cursor: str | None) -> DeadLetterPage:
    """Raises BadCursor for a cursor this API did not return."""
    return (await listed_page(engine, filters, limit, cursor)).model()


async def selected_ids(connection: AsyncConnection, filters: Filters, limit: int) -> list[uuid.UUID]:
    """The failed entries a filter matches now, searched as the list searches (words, or substrings when no entry
    has the words): a redrive's fixed selection, oldest first."""
    failed = dataclasses.replace(filters, status=DeadLetterStatus.failed)
    if search_words(failed.text) and not failed.substring and not await _any_has_words(connection, failed):
        failed = dataclasses.replace(failed, substring=True)
    query = (
        select(col(DeadLetter.id))
        .where(*failed.conditions())
        .order_by(col(DeadLetter.created_at), col(DeadLetter.id))
        .limit(limit)
    )
    return list((await connection.scalars(query)).all())


async def group_fields(engine: AsyncEngine) -> dict[str, Any]:
    """DeadLetterGroups' fields, each group's sample error masked."""
    async with reading(engine) as connection:
        groups = await _rows(connection, GROUPS)
    for group in groups:
        group["sample_error"] = _masked(group["sample_error"] or "") or None
    return {"groups": groups}


async def groups(engine: AsyncEngine) -> DeadLetterGroups:
    return DeadLetterGroups.model_validate(await group_fields(engine))


async def view(engine: AsyncEngine, entry_id: uuid.UUID, actor: str) -> DeadLetterDetail:
    """Everything captured, unmasked, with every failure and retry; the viewing is audited by the same statement."""
    values = {"entry_id": entry_id, "actor": actor, "correlation_id": current_correlation_id()}
    async with reading(engine) as connection:
        row = (await connection.execute(_DETAIL, values)).mappings().first()
    if row is None:
        raise EntryNotFound(f"dead letter {entry_id} not found")
    return DeadLetterDetail.model_validate(
        {**row, "raw_body_base64": base64.b64encode(bytes(row["raw_body"])).decode()}
    )
