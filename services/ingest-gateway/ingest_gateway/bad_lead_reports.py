"""Bad-lead reports: the provider that received a lead reports it once; an admin decides each report once."""

from __future__ import annotations

import uuid

from sqlalchemy import Text, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import SQLModel, col

from ingest_gateway.errors import Conflict, Forbidden, NotFound
from libs import audit
from libs.auth import Principal
from libs.db.tables import Assignment, BadLeadReport, Provider, ReportStatus, UserRole


class DecidedReport(SQLModel):
    """What deciding a report needs to know about the lead it names and the provider that paid for it."""

    assignment_id: uuid.UUID
    provider_id: uuid.UUID
    price_cents: int
    lead_id: uuid.UUID
    provider_email: str


def reporter(principal: Principal) -> uuid.UUID:
    """The provider filing a report; only a provider reports (and only its own leads, see `file`)."""
    if principal.role != UserRole.provider or principal.provider_id is None:
        raise Forbidden("only the provider that received the lead can report it")
    return principal.provider_id


def refusal(report_id: uuid.UUID, current: ReportStatus | None) -> NotFound | Conflict:
    """Why a report could not be decided: it does not exist, or it was decided already."""
    if current is None:
        return NotFound(f"bad-lead report {report_id} not found")
    return Conflict(f"report is already {current}")


async def file(engine: AsyncEngine, assignment_id: uuid.UUID, principal: Principal, reason: str) -> uuid.UUID:
    """The new report's id. An assignment of another provider is not found; a second report is a conflict."""
    provider_id = reporter(principal)
    # Inserted from the assignment only when it is the reporter's own.
    own_assignment = select(
        col(Assignment.id), col(Assignment.provider_id), bindparam("reason", reason, type_=Text)
    ).where(col(Assignment.id) == assignment_id, col(Assignment.provider_id) == provider_id)
    try:
        async with engine.begin() as connection:
            report_id: uuid.UUID | None = await connection.scalar(
                insert(BadLeadReport)
                .from_select(["assignment_id", "provider_id", "reason"], own_assignment)
                .returning(col(BadLeadReport.id))
            )
            if report_id is None:
                raise NotFound(f"assignment {assignment_id} not found")
            await audit.record(
                connection, actor=principal.subject, action="bad_lead.reported", entity_type="bad_lead_report",
                entity_id=str(report_id), metadata={"assignment_id": assignment_id},
            )  # fmt: skip
    except IntegrityError:
        raise Conflict("this lead was already reported") from None
    return report_id


async def reject(engine: AsyncEngine, report_id: uuid.UUID, actor: uuid.UUID) -> None:
    async with engine.begin() as connection:
        await decide(connection, report_id, ReportStatus.rejected, actor)
        await audit.record(
            connection, actor=str(actor), action="bad_lead.rejected", entity_type="bad_lead_report",
            entity_id=str(report_id),
        )  # fmt: skip


async def decide(
    connection: AsyncConnection, report_id: uuid.UUID, status: ReportStatus, actor: uuid.UUID
) -> DecidedReport:
    """Decides a pending report in the caller's transaction; of two admins deciding at once, the second is refused."""
    decided = (
        await connection.execute(
            update(BadLeadReport)
            .where(
                col(BadLeadReport.id) == report_id,
                col(BadLeadReport.status) == ReportStatus.pending,
                col(Assignment.id) == col(BadLeadReport.assignment_id),
                col(Provider.id) == col(Assignment.provider_id),
            )
            .values(status=status, decided_by=actor, decided_at=func.now())
            .returning(
                col(BadLeadReport.assignment_id),
                col(BadLeadReport.provider_id),
                col(Assignment.price_cents),
                col(Assignment.lead_id),
                col(Provider.email),
            )
        )
    ).first()
    if decided is None:
        current = await connection.scalar(select(col(BadLeadReport.status)).where(col(BadLeadReport.id) == report_id))
        raise refusal(report_id, current)
    return DecidedReport(
        assignment_id=decided.assignment_id,
        provider_id=decided.provider_id,
        price_cents=decided.price_cents,
        lead_id=decided.lead_id,
        provider_email=decided.email,
    )
