"""Leads, their assignments to providers, and the providers' reports of bad leads."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from libs.db.tables.columns import created_now, one_of, stored_enum, timestamp, uuid_pk


class LeadStatus(enum.StrEnum):
    submitted = "submitted"
    approved = "approved"
    rejected = "rejected"
    distributed = "distributed"
    unassigned = "unassigned"


class AssignmentStatus(enum.StrEnum):
    delivered = "delivered"
    refunded = "refunded"


class ReportStatus(enum.StrEnum):
    """A bad-lead report's decision."""

    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class Lead(SQLModel, table=True):
    __tablename__ = "leads"
    __table_args__ = (
        UniqueConstraint("source_id", "external_id", name="leads_source_id_external_id_key"),
        one_of("status", LeadStatus, "leads_status_check"),
        Index(
            "idx_leads_idempotency",
            "source_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
    )

    id: uuid.UUID = uuid_pk()
    source_id: uuid.UUID = Field(foreign_key="lead_sources.id")
    external_id: str = Field(max_length=200)
    idempotency_key: str | None = Field(default=None, max_length=200)
    category: str = Field(max_length=100)
    zip: str = Field(max_length=10)
    contact: dict[str, Any] = Field(sa_type=JSONB)
    status: LeadStatus = Field(
        default=LeadStatus.submitted,
        sa_type=stored_enum(LeadStatus, 16),
        sa_column_kwargs={"server_default": LeadStatus.submitted.value},
    )
    decided_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    decided_at: datetime | None = timestamp()
    created_at: datetime = created_now()
    # When lead.submitted was confirmed by the broker: a repeated request republishes only if this is NULL.
    published_at: datetime | None = timestamp()
    rejection_reason: str | None = Field(default=None, sa_type=Text)


class Assignment(SQLModel, table=True):
    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("lead_id", "provider_id", name="assignments_lead_id_provider_id_key"),
        CheckConstraint("price_cents > 0", name="assignments_price_cents_check"),
        one_of("status", AssignmentStatus, "assignments_status_check"),
        Index("idx_assignments_inbox", "provider_id", text("created_at DESC"), text("id DESC")),
        # A daily cap counts one subscription's assignments of today: found by range, whatever the table holds.
        Index("idx_assignments_subscription_day", "subscription_id", "created_at"),
    )

    id: uuid.UUID = uuid_pk()
    lead_id: uuid.UUID = Field(foreign_key="leads.id")
    provider_id: uuid.UUID = Field(foreign_key="providers.id")
    subscription_id: uuid.UUID = Field(foreign_key="subscriptions.id")
    price_cents: int = Field(sa_type=BigInteger)
    status: AssignmentStatus = Field(
        default=AssignmentStatus.delivered,
        sa_type=stored_enum(AssignmentStatus, 16),
        sa_column_kwargs={"server_default": AssignmentStatus.delivered.value},
    )
    created_at: datetime = created_now()


class BadLeadReport(SQLModel, table=True):
    __tablename__ = "bad_lead_reports"
    __table_args__ = (one_of("status", ReportStatus, "bad_lead_reports_status_check"),)

    id: uuid.UUID = uuid_pk()
    assignment_id: uuid.UUID = Field(foreign_key="assignments.id", unique=True)
    provider_id: uuid.UUID = Field(foreign_key="providers.id")
    reason: str = Field(sa_type=Text)
    status: ReportStatus = Field(
        default=ReportStatus.pending,
        sa_type=stored_enum(ReportStatus, 16),
        sa_column_kwargs={"server_default": ReportStatus.pending.value},
    )
    decided_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    decided_at: datetime | None = timestamp()
    created_at: datetime = created_now()
