"""A provider's inbox: its assignments newest first, keyset-paginated on (created_at, id) so pages stay stable."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import ColumnElement, Date, Select, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import SQLModel, col

from ingest_gateway.errors import Invalid
from libs.contracts import Contact
from libs.db.keyset import BadCursor, decode_cursor, encode_cursor
from libs.db.tables import Assignment, AssignmentStatus, Lead


class InboxItem(SQLModel):
    assignment_id: uuid.UUID
    lead_id: uuid.UUID
    price_cents: int
    status: AssignmentStatus
    assigned_at: datetime
    category: str
    zip: str
    contact: Contact


class InboxPage(SQLModel):
    items: list[InboxItem]
    # Pass it back as `cursor` for the next (older) page; null on the last page.
    next_cursor: str | None


@dataclass(frozen=True)
class InboxQuery:
    provider_id: uuid.UUID
    limit: int
    cursor: str | None = None
    status: AssignmentStatus | None = None
    date_from: date | None = None
    date_to: date | None = None


_ITEMS = (
    select(
        col(Assignment.id).label("assignment_id"),
        col(Assignment.lead_id),
        col(Assignment.price_cents),
        col(Assignment.status),
        col(Assignment.created_at).label("assigned_at"),
        col(Lead.category),
        col(Lead.zip),
        col(Lead.contact),
    )
    .join(Lead, col(Lead.id) == col(Assignment.lead_id))
    .order_by(col(Assignment.created_at).desc(), col(Assignment.id).desc())
)


def statement(query: InboxQuery) -> Select[tuple[object, ...]]:
    """The page's query: one row more than the limit, to know whether an older page follows.

    Raises Invalid when the cursor is not one this API returned.
    """
    return _ITEMS.where(*conditions(query)).limit(query.limit + 1)


def conditions(query: InboxQuery) -> list[ColumnElement[bool]]:
    where = [col(Assignment.provider_id) == query.provider_id]
    if query.cursor:
        cursor_at, cursor_id = _position(query.cursor)
        # Strictly older than the last row shown, in the (created_at, id) order of the index.
        where.append(tuple_(col(Assignment.created_at), col(Assignment.id)) < tuple_(cursor_at, cursor_id))
    if query.status:
        where.append(col(Assignment.status) == query.status)
    if query.date_from:
        where.append(col(Assignment.created_at) >= literal(query.date_from, Date))
    if query.date_to:
        if query.date_to == date.max:
            raise Invalid("to must be a day before 9999-12-31", field="to")
        # `to` is inclusive: everything before the next day starts.
        where.append(col(Assignment.created_at) < literal(query.date_to + timedelta(days=1), Date))
    return where


def _position(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Where a cursor points, as the database compares it: an aware time it can represent in UTC."""
    try:
        at, row_id = decode_cursor(cursor)
        if at.tzinfo is None:
            raise BadCursor("cursor is not one this API returned")
        return at.astimezone(UTC), row_id
    except (BadCursor, OverflowError):
        raise Invalid("cursor is not one this API returned", field="cursor") from None


async def inbox_page(connection: AsyncConnection, query: InboxQuery) -> InboxPage:
    rows = (await connection.execute(statement(query))).all()
    items = [InboxItem.model_validate(row._mapping) for row in rows[: query.limit]]
    more = len(rows) > query.limit
    next_cursor = encode_cursor(items[-1].assigned_at, items[-1].assignment_id) if more else None
    return InboxPage(items=items, next_cursor=next_cursor)
