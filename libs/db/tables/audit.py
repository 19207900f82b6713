"""The audit trail: who did what to which entity, and under which correlation id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from libs.db.tables.columns import created_now, serial_pk


class AuditEntry(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (Index("idx_audit_entity", "entity_type", "entity_id", text("created_at DESC")),)

    id: int = serial_pk()
    actor: str = Field(max_length=200)
    action: str = Field(max_length=100)
    entity_type: str = Field(max_length=64)
    entity_id: str | None = Field(default=None, max_length=200)
    correlation_id: str | None = Field(default=None, max_length=128)
    # `metadata` is reserved on declarative classes: the attribute is `details`, the column keeps its name.
    details: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column("metadata", JSONB, nullable=False, server_default=text("'{}'"))
    )
    created_at: datetime = created_now()
