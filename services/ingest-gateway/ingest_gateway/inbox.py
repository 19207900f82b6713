"""A provider's inbox: its assignments newest first, keyset-paginated on (created_at, id) so pages stay stable."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from libs.db.keyset import decode_cursor, encode_cursor


@dataclass(frozen=True)
class InboxQuery:
    provider_id: uuid.UUID
    limit: int
    cursor: str | None = None
    status: str | None = None
    date_from: date | None = None
    date_to: date | None = None


async def inbox_page(connection: AsyncConnection, query: InboxQuery) -> tuple[list[dict[str, Any]], str | None]:
    conditions = ["a.provider_id = :provider"]
    params: dict[str, Any] = {"provider": query.provider_id, "limit": query.limit + 1}
    if query.cursor:
        params["cursor_at"], params["cursor_id"] = decode_cursor(query.cursor)
        conditions.append("(a.created_at, a.id) < (:cursor_at, :cursor_id)")
    if query.status:
        conditions.append("a.status = :status")
        params["status"] = query.status
    if query.date_from:
        conditions.append("a.created_at >= :date_from")
        params["date_from"] = query.date_from
    if query.date_to:
        conditions.append("a.created_at < :date_to")
        params["date_to"] = query.date_to + timedelta(days=1)
    # Only the fixed condition strings above are joined in; every value is a bound parameter.
    sql = (
        "SELECT a.id, a.lead_id, a.price_cents, a.status, a.created_at, l.category, l.zip, l.contact "
        "FROM assignments a JOIN leads l ON l.id = a.lead_id WHERE " + " AND ".join(conditions) + " "
        "ORDER BY a.created_at DESC, a.id DESC LIMIT :limit"
    )
    rows = (await connection.execute(text(sql), params)).all()
    items = [
        {
            "assignment_id": row.id,
            "lead_id": row.lead_id,
            "price_cents": row.price_cents,
            "status": row.status,
            "assigned_at": row.created_at,
            "category": row.category,
            "zip": row.zip,
            "contact": row.contact,
        }
        for row in rows[: query.limit]
    ]
    more = len(rows) > query.limit
    next_cursor = encode_cursor(rows[query.limit - 1].created_at, rows[query.limit - 1].id) if more else None
    return items, next_cursor
