"""The scheduler's state: pause switches, one run per (job, slot), and what reconciliation found."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, Text, UniqueConstraint, Uuid, false, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from libs.db.tables.columns import created_now, one_of, serial_pk, stored_enum, timestamp, uuid_pk


class RunStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


class RunTrigger(enum.StrEnum):
    schedule = "schedule"
    catch_up = "catch_up"
    manual = "manual"


class ScheduledJob(SQLModel, table=True):
    __tablename__ = "scheduled_jobs"

    job: str = Field(max_length=100, primary_key=True)
    paused: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    changed_by: str | None = Field(default=None, max_length=200)
    changed_at: datetime = created_now()


class ScheduledJobRun(SQLModel, table=True):
    __tablename__ = "scheduled_job_runs"
    __table_args__ = (
        UniqueConstraint("job", "slot", name="scheduled_job_runs_job_slot_key"),
        one_of("status", RunStatus, "scheduled_job_runs_status_check"),
        Index("idx_job_runs_job", "job", text("slot DESC")),
    )

    id: uuid.UUID = uuid_pk()
    job: str = Field(max_length=100)
    slot: datetime = timestamp(nullable=False)
    status: RunStatus = Field(
        default=RunStatus.queued,
        sa_type=stored_enum(RunStatus, 16),
        sa_column_kwargs={"server_default": RunStatus.queued.value},
    )
    started_at: datetime | None = timestamp()
    finished_at: datetime | None = timestamp()
    counts: dict[str, Any] = Field(
        default_factory=dict, sa_type=JSONB, sa_column_kwargs={"server_default": text("'{}'")}
    )
    error: str | None = Field(default=None, sa_type=Text)
    trigger: RunTrigger = Field(
        default=RunTrigger.schedule,
        sa_type=stored_enum(RunTrigger, 16),
        sa_column_kwargs={"server_default": RunTrigger.schedule.value},
    )
    coalesced_slots: int = Field(default=0, sa_type=Integer, sa_column_kwargs={"server_default": text("0")})
    attempts: int = Field(default=0, sa_type=Integer, sa_column_kwargs={"server_default": text("0")})
    requested_by: str | None = Field(default=None, max_length=200)


class BalanceDiscrepancy(SQLModel, table=True):
    __tablename__ = "balance_discrepancies"
    __table_args__ = (Index("idx_discrepancies_run", "run_id"),)

    id: int = serial_pk()
    run_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("scheduled_job_runs.id", ondelete="CASCADE"), nullable=False)
    )
    provider_id: uuid.UUID = Field(foreign_key="providers.id")
    expected_cents: int = Field(sa_type=BigInteger)
    actual_cents: int = Field(sa_type=BigInteger)
    found_at: datetime = created_now()
