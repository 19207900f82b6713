"""The audit trail: who did what to which entity, under which correlation id, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import bindparam, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from libs.db.tables import AuditEntry
from libs.logging import current_correlation_id

_RECORD = insert(AuditEntry).values(
    actor=bindparam("actor"),
    action=bindparam("action"),
    entity_type=bindparam("entity_type"),
    entity_id=bindparam("entity_id"),
    correlation_id=bindparam("correlation_id"),
    details=bindparam("details"),
)


async def record(
    connection: AsyncConnection,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str | None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    params = {
        "actor": actor,
        "action": action,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "correlation_id": current_correlation_id(),
        # Values JSON cannot hold (UUIDs, datetimes, enums) are stored as their text.
        "details": orjson.loads(orjson.dumps(dict(metadata or {}), default=str)),
    }
    await connection.execute(_RECORD, params)
