"""The audit trail: who did what to which entity, under which correlation id, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from libs.logging import current_correlation_id


async def record(
    connection: AsyncConnection,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str | None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    await connection.execute(
        text(
            "INSERT INTO audit_log (actor, action, entity_type, entity_id, correlation_id, metadata) "
            "VALUES (:actor, :action, :entity_type, :entity_id, :correlation_id, CAST(:metadata AS jsonb))"
        ),
        {
            "actor": actor,
            "action": action,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "correlation_id": current_correlation_id(),
            "metadata": orjson.dumps(dict(metadata or {}), default=str).decode(),
        },
    )
