"""The audit trail as the console reads it: newest first, filtered by actor, action and entity, with the actor's
email address where the actor is a user."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Text, bindparam, cast, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col

from dlq_service.dead_letters import mask, mask_text
from libs.db.keyset import BadCursor
from libs.db.tables import AuditEntry, User


def masked_details(value: Any, key: str = "") -> Any:
    """Details as the page shows them: contact details hidden by key and by shape, in diffs too."""
    if isinstance(value, dict):
        return {name: masked_details(item, str(name)) for name, item in value.items()}
    if isinstance(value, list):
        return [masked_details(item, key) for item in value]
    if isinstance(value, str):
        return mask_text(mask(value, key))
    return value


class AuditRow(SQLModel):
    id: int
    actor: str
    actor_email: str | None
    action: str
    entity_type: str
    entity_id: str | None
    correlation_id: str | None
    details: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class AuditFilters:
    actor: str | None = None
    action: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        equal = ((AuditEntry.actor, self.actor), (AuditEntry.action, self.action),
                 (AuditEntry.entity_type, self.entity_type), (AuditEntry.entity_id, self.entity_id))  # fmt: skip
        return [col(column) == value for column, value in equal if value]


@dataclass(frozen=True)
class AuditPage:
    items: list[AuditRow]
    next_cursor: str | None


_COLUMNS: list[Any] = [
    col(AuditEntry.id), col(AuditEntry.actor), col(User.email).label("actor_email"), col(AuditEntry.action),
    col(AuditEntry.entity_type), col(AuditEntry.entity_id), col(AuditEntry.correlation_id),
    col(AuditEntry.details).label("details"), col(AuditEntry.created_at),
]  # fmt: skip
_ROWS = (
    select(*_COLUMNS)
    .select_from(AuditEntry)
    .outerjoin(User, cast(col(User.id), Text) == col(AuditEntry.actor))
    .order_by(col(AuditEntry.id).desc())
    .limit(bindparam("limit"))
)


def cursor_id(cursor: str | None) -> int | None:
    """Ids only go up, so the last id of a page is a stable cursor; raises BadCursor for anything else."""
    if not cursor:
        return None
    if not cursor.isdigit() or len(cursor) > 19:
        raise BadCursor("cursor is not one this page gave")
    return int(cursor)


async def page(engine: AsyncEngine, filters: AuditFilters, limit: int, cursor: str | None) -> AuditPage:
    query = _ROWS.where(*filters.conditions())
    before = cursor_id(cursor)
    if before is not None:
        query = query.where(col(AuditEntry.id) < before)
    async with engine.connect() as connection:
        rows = (await connection.execute(query, {"limit": limit + 1})).mappings().all()
    items = [AuditRow.model_validate({**row, "details": masked_details(row["details"])}) for row in rows[:limit]]
    return AuditPage(items, str(items[-1].id) if len(rows) > limit else None)
