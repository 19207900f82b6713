"""An admin's decision on a submitted lead: approved (lead.approved staged in the outbox with it) or rejected."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from ingest_gateway import outbox
from ingest_gateway.errors import Conflict, NotFound
from libs import audit
from libs.contracts import LeadApproved
from libs.db.tables import Lead, LeadStatus


def refusal(lead_id: uuid.UUID, current: LeadStatus | None) -> NotFound | Conflict:
    """Why a lead could not be decided: it does not exist, or it is no longer waiting for a decision."""
    if current is None:
        return NotFound(f"lead {lead_id} not found")
    return Conflict(f"lead is already {current}")


async def approve(engine: AsyncEngine, lead_id: uuid.UUID, actor: uuid.UUID) -> None:
    """lead.approved commits with the approval (the outbox's relay publishes it after the commit)."""
    async with engine.begin() as connection:
        await _decide(connection, lead_id, LeadStatus.approved, actor, None)
        await outbox.stage(
            connection, LeadApproved(lead_id=lead_id, approved_by=str(actor)), f"lead.approved:{lead_id}"
        )


async def reject(engine: AsyncEngine, lead_id: uuid.UUID, actor: uuid.UUID, reason: str) -> None:
    async with engine.begin() as connection:
        await _decide(connection, lead_id, LeadStatus.rejected, actor, reason)


async def _decide(
    connection: AsyncConnection, lead_id: uuid.UUID, status: LeadStatus, actor: uuid.UUID, reason: str | None
) -> None:
    # Decided only while still submitted: of two admins deciding at once, the second finds it decided.
    decided = await connection.scalar(
        update(Lead)
        .where(col(Lead.id) == lead_id, col(Lead.status) == LeadStatus.submitted)
        .values(status=status, decided_by=actor, decided_at=func.now(), rejection_reason=reason)
        .returning(col(Lead.id))
    )
    if decided is None:
        raise refusal(lead_id, await connection.scalar(select(col(Lead.status)).where(col(Lead.id) == lead_id)))
    await audit.record(
        connection, actor=str(actor), action=f"lead.{status}", entity_type="lead", entity_id=str(lead_id)
    )
