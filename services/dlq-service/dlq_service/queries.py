"""Reading the dead-letter store: filtered keyset pages, groups by fingerprint, one entry with its history.

SQL here is assembled only from fixed fragments (`noqa: S608`); every value is a bound parameter.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from dlq_service.dead_letters import mask
from libs.db.keyset import decode_cursor, encode_cursor

LIST_COLUMNS = (
    "id, queue_name, reason, status, error_type, error_message, attempts, retry_count, fingerprint, message_id, "
    "correlation_id, service, first_failed_at, last_failed_at, created_at, resolution, payload"
)


@dataclass(frozen=True)
class Filters:
    queue: str | None = None
    status: str | None = None
    reason: str | None = None
    error_type: str | None = None
    fingerprint: str | None = None
    failed_from: datetime | None = None
    failed_to: datetime | None = None
    text: str | None = None

    def where(self) -> tuple[list[str], dict[str, Any]]:
        """Fixed condition strings joined with AND; every value is a bound parameter."""
        conditions: list[str] = []
        params: dict[str, Any] = {}
        for column, value in (("queue_name", self.queue), ("status", self.status), ("reason", self.reason),
                              ("error_type", self.error_type), ("fingerprint", self.fingerprint)):  # fmt: skip
            if value is not None:
                conditions.append(f"{column} = :{column}")
                params[column] = value
        if self.failed_from is not None:
            conditions.append("last_failed_at >= :failed_from")
            params["failed_from"] = self.failed_from
        if self.failed_to is not None:
            conditions.append("last_failed_at < :failed_to")
            params["failed_to"] = self.failed_to
        if self.text:
            # Every word must appear (AND), in the error message or anywhere in the payload.
            for index, word in enumerate(self.text.split()[:10]):
                conditions.append(f"(error_message ILIKE :word{index} OR payload::text ILIKE :word{index})")
                params[f"word{index}"] = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return conditions, params


def _entry(row: Any, masked: bool) -> dict[str, Any]:
    entry = dict(row._mapping)
    if masked:
        entry["payload"] = mask(entry.get("payload"))
    entry["queue"] = entry.pop("queue_name")
    return entry


async def list_page(
    connection: AsyncConnection, filters: Filters, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    conditions, params = filters.where()
    if cursor:
        params["cursor_at"], params["cursor_id"] = decode_cursor(cursor)
        conditions.append("(created_at, id) < (:cursor_at, :cursor_id)")
    params["limit"] = limit + 1
    where = ("WHERE " + " AND ".join(conditions)) if conditions else ""
    sql = f"SELECT {LIST_COLUMNS} FROM dead_letter_queue {where} ORDER BY created_at DESC, id DESC LIMIT :limit"  # noqa: S608
    rows = (await connection.execute(text(sql), params)).all()
    items = [_entry(row, masked=True) for row in rows[:limit]]
    more = len(rows) > limit
    return items, (encode_cursor(rows[limit - 1].created_at, rows[limit - 1].id) if more else None)


async def selected_ids(connection: AsyncConnection, filters: Filters, limit: int) -> list[uuid.UUID]:
    """The failed entries a filter matches now: a redrive's fixed selection, oldest first."""
    conditions, params = Filters(**{**filters.__dict__, "status": "failed"}).where()
    params["limit"] = limit
    where = " AND ".join(conditions)
    sql = f"SELECT id FROM dead_letter_queue WHERE {where} ORDER BY created_at, id LIMIT :limit"  # noqa: S608
    return list((await connection.execute(text(sql), params)).scalars().all())


async def groups(connection: AsyncConnection) -> list[dict[str, Any]]:
    rows = await connection.execute(
        text(
            "SELECT queue_name AS queue, fingerprint, count(*) AS count, min(first_failed_at) AS first_seen, "
            "max(last_failed_at) AS last_seen, (array_agg(error_type ORDER BY last_failed_at DESC))[1] AS error_type, "
            "(array_agg(error_message ORDER BY last_failed_at DESC))[1] AS sample_error "
            "FROM dead_letter_queue WHERE status <> 'resolved' GROUP BY queue_name, fingerprint "
            "ORDER BY count(*) DESC, max(last_failed_at) DESC"
        )
    )
    return [dict(row._mapping) for row in rows]


async def detail(connection: AsyncConnection, entry_id: uuid.UUID) -> dict[str, Any] | None:
    row = (
        await connection.execute(
            text(
                f"SELECT {LIST_COLUMNS}, stack_trace, headers, raw_body, original_exchange, original_routing_key, "  # noqa: S608
                "message_type, content_type, resolved, resolved_at, resolved_by, job_id "
                "FROM dead_letter_queue WHERE id = :id"
            ),
            {"id": entry_id},
        )
    ).first()
    if row is None:
        return None
    entry = _entry(row, masked=False)
    entry["raw_body_base64"] = base64.b64encode(bytes(entry.pop("raw_body"))).decode()
    events = await connection.execute(
        text(
            "SELECT reason, error_type, error_message, attempts, failed_at, received_at FROM dead_letter_events "
            "WHERE entry_id = :id ORDER BY id"
        ),
        {"id": entry_id},
    )
    retries = await connection.execute(
        text(
            "SELECT redrive_id, requested_by, requested_at, outcome, outcome_at FROM dead_letter_retries "
            "WHERE entry_id = :id ORDER BY id"
        ),
        {"id": entry_id},
    )
    entry["failures"] = [dict(event._mapping) for event in events]
    entry["retries"] = [dict(retry._mapping) for retry in retries]
    return entry
