"""Resolving dead letters: by an admin's hand, or by itself when its retry was handled.

A retry's success is believed only with the dlq-service's signature over entry and retry, and only for the retry
still in flight: a forged or stale report changes nothing.
"""

from __future__ import annotations

import uuid

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from dlq_service.capture import IN_FLIGHT, SETTLE_RETRY, link_params
from dlq_service.dead_letters import RetryLink
from dlq_service.queries import EntryNotFound, EntryState
from dlq_service.signing import RetrySigner
from libs import audit
from libs.db.tables import DeadLetter, DeadLetterStatus, Resolution, RetryOutcome

# An admin may resolve anything not yet resolved; a retry's success resolves only the entry it was retrying.
RESOLVABLE: dict[Resolution, tuple[DeadLetterStatus, ...]] = {
    Resolution.manual: (DeadLetterStatus.failed, DeadLetterStatus.retrying),
    Resolution.retry_succeeded: (DeadLetterStatus.retrying,),
}


class ForgedOutcome(Exception):
    """A retry outcome without the dlq-service's signature for that entry and retry."""


_RESOLVED = {"status": DeadLetterStatus.resolved, "resolved": True, "resolved_at": func.now()}
_RESOLVE_BY_HAND = (
    update(DeadLetter)
    .where(
        col(DeadLetter.id) == bindparam("entry_id"),
        col(DeadLetter.status).in_(RESOLVABLE[Resolution.manual]),
    )
    .values(**_RESOLVED, resolved_by=bindparam("resolved_by"), resolution=Resolution.manual)
    .returning(col(DeadLetter.id))
)
_RESOLVE_BY_RETRY = (
    update(DeadLetter)
    .where(
        col(DeadLetter.id) == bindparam("link_entry_id"),
        col(DeadLetter.status).in_(RESOLVABLE[Resolution.retry_succeeded]),
        IN_FLIGHT,
    )
    .values(**_RESOLVED, resolved_by=None, resolution=Resolution.retry_succeeded)
    .returning(col(DeadLetter.id))
)
_EXISTS = select(col(DeadLetter.id)).where(col(DeadLetter.id) == bindparam("entry_id"))


async def resolve_by_hand(engine: AsyncEngine, entry_id: uuid.UUID, actor: str) -> EntryState:
    """Who and when are kept; the row stays until the retention cleanup. Resolving twice changes nothing and is
    audited once."""
    async with engine.begin() as connection:
        if await connection.scalar(_RESOLVE_BY_HAND, {"entry_id": entry_id, "resolved_by": uuid.UUID(actor)}):
            await audit.record(
                connection, actor=actor, action="dlq.entry_resolved", entity_type="dead_letter", entity_id=str(entry_id)
            )
        elif await connection.scalar(_EXISTS, {"entry_id": entry_id}) is None:
            raise EntryNotFound(f"dead letter {entry_id} not found")
    return EntryState(id=entry_id, status=DeadLetterStatus.resolved)


async def _resolve_by_retry(connection: AsyncConnection, link: RetryLink) -> bool:
    """The entry resolves only while being retried; the retry itself succeeded either way, if still in flight."""
    resolved = await connection.scalar(_RESOLVE_BY_RETRY, link_params(link))
    await connection.execute(SETTLE_RETRY, {**link_params(link), "outcome": RetryOutcome.succeeded})
    return resolved is not None


async def resolve_after_retry(engine: AsyncEngine, signer: RetrySigner, link: RetryLink) -> bool:
    """The retried message was handled: its entry resolves itself and that retry succeeded. False when the retry
    is no longer in flight (the entry failed again) or an admin resolved the entry meanwhile. Raises ForgedOutcome."""
    if not signer.verify(link.entry_id, link.retry_id, link.signature):
        raise ForgedOutcome(f"no valid dlq-service signature for retry {link.retry_id} of entry {link.entry_id}")
    async with engine.begin() as connection:
        return await _resolve_by_retry(connection, link)
