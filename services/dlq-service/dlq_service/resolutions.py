"""Resolving dead letters: by an admin's hand, or by itself when its retry was handled. One statement for both."""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from dlq_service.queries import EntryNotFound, EntryState
from dlq_service.retries import SETTLE_LAST_RETRY
from libs import audit
from libs.db.tables import DeadLetter, DeadLetterStatus, Resolution, RetryOutcome

# An admin may resolve anything not yet resolved; a retry's success resolves only the entry it was retrying.
RESOLVABLE: dict[Resolution, tuple[DeadLetterStatus, ...]] = {
    Resolution.manual: (DeadLetterStatus.failed, DeadLetterStatus.retrying),
    Resolution.retry_succeeded: (DeadLetterStatus.retrying,),
}

_RESOLVE = (
    update(DeadLetter)
    .where(
        col(DeadLetter.id) == bindparam("entry_id"),
        col(DeadLetter.status).in_(bindparam("resolvable", expanding=True)),
    )
    .values(
        status=DeadLetterStatus.resolved,
        resolved=True,
        resolved_at=func.now(),
        resolved_by=bindparam("resolved_by"),
        resolution=bindparam("resolution"),
    )
    .returning(col(DeadLetter.id))
)
_EXISTS = select(col(DeadLetter.id)).where(col(DeadLetter.id) == bindparam("entry_id"))


async def resolve(
    connection: AsyncConnection, entry_id: uuid.UUID, resolution: Resolution, by: uuid.UUID | None
) -> bool:
    """False when the entry is missing or not resolvable this way (already resolved, or no longer retrying)."""
    resolved = await connection.scalar(
        _RESOLVE,
        {"entry_id": entry_id, "resolvable": list(RESOLVABLE[resolution]), "resolved_by": by, "resolution": resolution},
    )
    return resolved is not None


async def resolve_by_hand(engine: AsyncEngine, entry_id: uuid.UUID, actor: str) -> EntryState:
    """Who and when are kept; the row stays until the retention cleanup. Resolving twice changes nothing and is
    audited once."""
    async with engine.begin() as connection:
        if await resolve(connection, entry_id, Resolution.manual, uuid.UUID(actor)):
            await audit.record(
                connection, actor=actor, action="dlq.entry_resolved", entity_type="dead_letter", entity_id=str(entry_id)
            )
        elif await connection.scalar(_EXISTS, {"entry_id": entry_id}) is None:
            raise EntryNotFound(f"dead letter {entry_id} not found")
    return EntryState(id=entry_id, status=DeadLetterStatus.resolved)


async def resolve_after_retry(engine: AsyncEngine, entry_id: uuid.UUID) -> bool:
    """The retried message was handled: its entry resolves itself and its latest retry succeeded."""
    async with engine.begin() as connection:
        resolved = await resolve(connection, entry_id, Resolution.retry_succeeded, None)
        await connection.execute(SETTLE_LAST_RETRY, {"retried_entry_id": entry_id, "outcome": RetryOutcome.succeeded})
    return resolved
