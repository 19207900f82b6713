"""Resolving by hand from the console: one entry with a note, or every unresolved entry of a failure group, each
through `resolutions.resolve_by_hand` (the API's own rule), the note and the group kept in the audit trail."""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from dlq_service import resolutions
from dlq_service.queries import UNRESOLVED, EntryState
from libs import audit
from libs.db.tables import DeadLetter

MAX_GROUP = 100_000
NOTE_CHARS = 2_000

# Equality (not IS NOT DISTINCT FROM) where the group has a fingerprint, so its unresolved entries are read from
# the partial index idx_dlq_group_latest.
_UNRESOLVED_OF_GROUP = (
    select(col(DeadLetter.id))
    .where(
        col(DeadLetter.queue_name) == bindparam("queue"),
        col(DeadLetter.fingerprint) == bindparam("fingerprint"),
        UNRESOLVED,
    )
    .order_by(col(DeadLetter.created_at))
    .limit(MAX_GROUP)
)
_UNRESOLVED_WITHOUT_FINGERPRINT = (
    select(col(DeadLetter.id))
    .where(col(DeadLetter.queue_name) == bindparam("queue"), col(DeadLetter.fingerprint).is_(None), UNRESOLVED)
    .order_by(col(DeadLetter.created_at))
    .limit(MAX_GROUP)
)


def clean_note(note: str | None) -> str | None:
    """Trimmed and bounded; NUL removed (PostgreSQL text cannot hold it); empty is no note."""
    text = (note or "").replace("\x00", "").strip()[:NOTE_CHARS]
    return text or None


async def resolve_entry(engine: AsyncEngine, entry_id: uuid.UUID, actor: str, note: str | None) -> EntryState:
    """Raises EntryNotFound. The note, if any, is audited as dlq.entry_noted beside dlq.entry_resolved."""
    state = await resolutions.resolve_by_hand(engine, entry_id, actor)
    text = clean_note(note)
    if text is not None:
        async with engine.begin() as connection:
            await audit.record(
                connection, actor=actor, action="dlq.entry_noted", entity_type="dead_letter",
                entity_id=str(entry_id), metadata={"note": text},
            )  # fmt: skip
    return state


async def resolve_group(engine: AsyncEngine, queue: str, fingerprint: str | None, actor: str, note: str | None) -> int:
    """Every entry of the group unresolved now (later failures are not swept in); how many were resolved.
    Audited as dlq.group_resolved, and each entry as dlq.entry_resolved."""
    async with engine.connect() as connection:
        if fingerprint is None:
            found = await connection.scalars(_UNRESOLVED_WITHOUT_FINGERPRINT, {"queue": queue})
        else:
            found = await connection.scalars(_UNRESOLVED_OF_GROUP, {"queue": queue, "fingerprint": fingerprint})
        ids = list(found.all())
    for entry_id in ids:
        await resolutions.resolve_by_hand(engine, entry_id, actor)
    async with engine.begin() as connection:
        await audit.record(
            connection, actor=actor, action="dlq.group_resolved", entity_type="dead_letter_group",
            entity_id=f"{queue}/{fingerprint or ''}", metadata={"resolved": len(ids), "note": clean_note(note)},
        )  # fmt: skip
    return len(ids)
