"""CSV report exports: requested through the gateway, written by the export-worker."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from libs.db.tables.columns import created_now, one_of, stored_enum, timestamp, uuid_pk


class ExportKind(enum.StrEnum):
    assignments = "assignments"
    ledger_statement = "ledger_statement"


class ExportStatus(enum.StrEnum):
    pending = "pending"
    running = "running"
    ready = "ready"
    failed = "failed"


class ReportExport(SQLModel, table=True):
    __tablename__ = "report_exports"
    __table_args__ = (
        one_of("kind", ExportKind, "report_exports_kind_check"),
        one_of("status", ExportStatus, "report_exports_status_check"),
    )

    id: uuid.UUID = uuid_pk()
    kind: ExportKind = Field(sa_type=stored_enum(ExportKind, 32))
    requested_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    provider_id: uuid.UUID | None = Field(default=None, foreign_key="providers.id")
    params: dict[str, Any] = Field(
        default_factory=dict, sa_type=JSONB, sa_column_kwargs={"server_default": text("'{}'")}
    )
    status: ExportStatus = Field(
        default=ExportStatus.pending,
        sa_type=stored_enum(ExportStatus, 16),
        sa_column_kwargs={"server_default": ExportStatus.pending.value},
    )
    file_path: str | None = Field(default=None, sa_type=Text)
    row_count: int | None = Field(default=None, sa_type=BigInteger)
    bytes: int | None = Field(default=None, sa_type=BigInteger)
    duration_ms: int | None = Field(default=None, sa_type=BigInteger)
    error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = created_now()
    finished_at: datetime | None = timestamp()
    date_from: date | None = Field(default=None, sa_type=Date)
    date_to: date | None = Field(default=None, sa_type=Date)
