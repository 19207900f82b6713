"""Report exports: requested here and queued for the export-worker; their state and file read back from here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col

from ingest_gateway import outbox
from ingest_gateway.errors import Conflict, Invalid, NotFound
from libs import audit
from libs.auth import Principal, require_admin, require_provider_or_admin
from libs.contracts import ExportReport
from libs.db.tables import ExportKind, ExportStatus, Provider, ReportExport, UserRole

# A day whose neighbours exist: a range's end is counted up to the start of the next day.
CalendarDay = Annotated[date, Field(gt=date.min, lt=date.max)]


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: ExportKind
    date_from: CalendarDay
    date_to: CalendarDay
    provider_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ExportRequest:
        if self.date_to < self.date_from:
            raise ValueError("date_to must not be before date_from")
        return self


class Export(SQLModel):
    id: uuid.UUID
    kind: ExportKind
    status: ExportStatus
    provider_id: uuid.UUID | None
    row_count: int | None
    bytes: int | None
    duration_ms: int | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Download:
    path: Path
    filename: str


_EXPORT = select(*(col(getattr(ReportExport, name)) for name in Export.model_fields))


def scope(principal: Principal, request: ExportRequest) -> uuid.UUID | None:
    """Whose data the export holds: a provider's own always; an admin's (with MFA) choice, which a ledger
    statement needs."""
    if principal.role == UserRole.provider:
        if request.provider_id not in (None, principal.provider_id):
            raise NotFound("provider not found")
        return principal.provider_id
    require_admin(principal)
    if request.kind == ExportKind.ledger_statement and request.provider_id is None:
        raise Invalid("provider_id is required for a ledger statement", field="provider_id", message="required")
    return request.provider_id


def ensure_visible(principal: Principal, export: Export) -> None:
    """An admin (with MFA) sees every export; a provider only those of its own data (others are not found, or
    forbidden)."""
    if principal.role != UserRole.provider:
        require_admin(principal)
        return
    if export.provider_id is None:
        raise NotFound(f"export {export.id} not found")
    require_provider_or_admin(principal, export.provider_id)


def ensure_ready(export: Export) -> None:
    if export.status != ExportStatus.ready:
        raise Conflict(f"export is {export.status}, not ready")


async def request(engine: AsyncEngine, principal: Principal, wanted: ExportRequest) -> Export:
    """The export as queued: report.export commits with the request (the outbox's relay publishes it)."""
    provider_id = scope(principal, wanted)
    async with engine.begin() as connection:
        if provider_id is not None and not await connection.scalar(
            select(col(Provider.id)).where(col(Provider.id) == provider_id)
        ):
            raise NotFound(f"provider {provider_id} not found")
        export_id = (
            await connection.execute(
                insert(ReportExport).returning(col(ReportExport.id)),
                {
                    "kind": wanted.kind,
                    "requested_by": uuid.UUID(principal.subject),
                    "provider_id": provider_id,
                    "date_from": wanted.date_from,
                    "date_to": wanted.date_to,
                },
            )
        ).scalar_one()
        await audit.record(
            connection, actor=principal.subject, action="export.requested", entity_type="report_export",
            entity_id=str(export_id), metadata={"kind": wanted.kind},
        )  # fmt: skip
        await outbox.stage(connection, ExportReport(export_id=export_id), f"report.export:{export_id}")
    return await status(engine, export_id, principal)


async def status(engine: AsyncEngine, export_id: uuid.UUID, principal: Principal) -> Export:
    if principal.role != UserRole.provider:
        require_admin(principal)  # before anything is read: without MFA, 403 whether or not the export exists
    async with engine.connect() as connection:
        row = (await connection.execute(_EXPORT.where(col(ReportExport.id) == export_id))).first()
    if row is None:
        raise NotFound(f"export {export_id} not found")
    export = Export.model_validate(row._mapping)
    ensure_visible(principal, export)
    return export


async def download(engine: AsyncEngine, export_dir: Path, export_id: uuid.UUID, principal: Principal) -> Download:
    """The file the export-worker wrote, once the export is ready and while the file is still there."""
    export = await status(engine, export_id, principal)
    ensure_ready(export)
    path = export_dir / f"{export_id}.csv"
    if not path.is_file():
        raise NotFound("the export file is gone")
    return Download(path=path, filename=f"{export.kind}-{export_id}.csv")
