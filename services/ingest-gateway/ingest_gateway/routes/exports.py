"""Report exports: requested here, written by export-worker, downloaded here once ready."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Literal

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, HTTPException, NotFoundException, ValidationException
from litestar.params import Body, FromPath
from litestar.response import File
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT
from pydantic import BaseModel, ConfigDict, model_validator
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway.routes.leads import broker_unavailable
from ingest_gateway.settings import Settings
from libs import audit
from libs.auth import Principal, require_provider_or_admin
from libs.contracts import ExportReport
from libs.logging import get_logger
from libs.messaging.publisher import Publisher, PublishFailed

log = get_logger("ingest_gateway.exports")


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["assignments", "ledger_statement"]
    date_from: date
    date_to: date
    provider_id: uuid.UUID | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ExportRequest:
        if self.date_to < self.date_from:
            raise ValueError("date_to must not be before date_from")
        return self


class ExportStatus(BaseModel):
    id: uuid.UUID
    kind: str
    status: str
    provider_id: uuid.UUID | None
    row_count: int | None
    bytes: int | None
    duration_ms: int | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class ExportsController(Controller):
    path = "/api/v1/reports/exports"
    tags = ["exports"]  # noqa: RUF012

    @post("/", status_code=HTTP_202_ACCEPTED, raises=[HTTPException])
    async def request_export(
        self,
        data: Annotated[ExportRequest, Body()],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        publisher: NamedDependency[Publisher],
    ) -> ExportStatus:
        provider_id = data.provider_id
        if principal.role == "provider":
            provider_id = principal.provider_id
            if data.provider_id not in (None, provider_id):
                raise NotFoundException("provider not found")
        elif data.kind == "ledger_statement" and provider_id is None:
            raise ValidationException(
                "provider_id is required for a ledger statement", extra=[{"key": "provider_id", "message": "required"}]
            )
        async with engine.begin() as connection:
            if provider_id is not None and not await connection.scalar(
                text("SELECT 1 FROM providers WHERE id = :id"), {"id": provider_id}
            ):
                raise NotFoundException(f"provider {provider_id} not found")
            export_id = await connection.scalar(
                text(
                    "INSERT INTO report_exports (kind, requested_by, provider_id, date_from, date_to) "
                    "VALUES (:kind, :by, :provider, :date_from, :date_to) RETURNING id"
                ),
                {"kind": data.kind, "by": uuid.UUID(principal.subject), "provider": provider_id,
                 "date_from": data.date_from, "date_to": data.date_to},
            )  # fmt: skip
            await audit.record(
                connection, actor=principal.subject, action="export.requested", entity_type="report_export",
                entity_id=str(export_id), metadata={"kind": data.kind},
            )  # fmt: skip
            try:
                await publisher.publish(ExportReport(export_id=export_id), message_id=f"report.export:{export_id}")
            except PublishFailed as error:
                log.error("export.publish_failed", error, {"export_id": str(export_id)})
                raise broker_unavailable() from None
        return await _status(engine, export_id, principal)

    @get("/{export_id:uuid}")
    async def export_status(
        self,
        export_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> ExportStatus:
        return await _status(engine, export_id, principal)

    @get("/{export_id:uuid}/download", media_type="text/csv")
    async def download(
        self,
        export_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        settings: NamedDependency[Settings],
    ) -> File:
        status = await _status(engine, export_id, principal)
        if status.status != "ready":
            raise ClientException(status_code=HTTP_409_CONFLICT, detail=f"export is {status.status}, not ready")
        path = Path(settings.export_dir) / f"{export_id}.csv"
        if not path.is_file():
            raise NotFoundException("the export file is gone")
        return File(path=path, filename=f"{status.kind}-{export_id}.csv", media_type="text/csv")


async def _status(
    engine: NamedDependency[AsyncEngine], export_id: FromPath[uuid.UUID], principal: NamedDependency[Principal]
) -> ExportStatus:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT id, kind, status, provider_id, requested_by, row_count, bytes, duration_ms, error, "
                    "created_at, finished_at FROM report_exports WHERE id = :id"
                ),
                {"id": export_id},
            )
        ).first()
    if row is None:
        raise NotFoundException(f"export {export_id} not found")
    if principal.role == "provider":
        if row.provider_id is None:
            raise NotFoundException(f"export {export_id} not found")
        require_provider_or_admin(principal, row.provider_id)
    return ExportStatus(**{key: getattr(row, key) for key in ExportStatus.model_fields})
