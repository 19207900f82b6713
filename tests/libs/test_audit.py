"""The audit trail: one row per action, with the bound correlation id, inside the caller's transaction."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from libs import audit
from libs.db.tables import AuditEntry
from libs.logging import correlation_scope


async def entries_for(engine: AsyncEngine, entity_id: str) -> list[AuditEntry]:
    # The column is `metadata` and the attribute `details`: label it so the model reads it back.
    statement: Select[*tuple[Any, ...]] = select(
        *(col(getattr(AuditEntry, name)).label(name) for name in AuditEntry.model_fields)
    ).where(col(AuditEntry.entity_id) == entity_id)
    async with engine.connect() as connection:
        rows = await connection.execute(statement)
        return [AuditEntry.model_validate(row._mapping) for row in rows]


async def test_an_action_is_recorded_with_its_actor_entity_and_correlation_id(engine: AsyncEngine) -> None:
    entity_id = str(uuid.uuid4())
    provider = uuid.uuid4()
    with correlation_scope("cid-audit-1"):
        async with engine.begin() as connection:
            await audit.record(
                connection, actor="admin@example.com", action="job.paused", entity_type="scheduled_job",
                entity_id=entity_id, metadata={"provider_id": provider, "reason": "maintenance"},
            )  # fmt: skip
    [entry] = await entries_for(engine, entity_id)
    assert (entry.actor, entry.action, entry.entity_type) == ("admin@example.com", "job.paused", "scheduled_job")
    assert entry.correlation_id == "cid-audit-1"
    # Values JSON cannot hold are kept as their text rather than refused.
    assert entry.details == {"provider_id": str(provider), "reason": "maintenance"}


async def test_nothing_is_recorded_when_the_callers_transaction_rolls_back(engine: AsyncEngine) -> None:
    entity_id = str(uuid.uuid4())
    async with engine.connect() as connection:
        await audit.record(connection, actor="a", action="export.requested", entity_type="export", entity_id=entity_id)
        await connection.rollback()
    assert await entries_for(engine, entity_id) == []
