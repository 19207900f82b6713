"""Each job as the admin API shows it: schedule, switch, pause, next run, last run and last success."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, SQLModel, col

from libs.db.tables import RunStatus, RunTrigger, ScheduledJobRun
from scheduler.pauses import ALL_PAUSED
from scheduler.schedule import next_slot


class RunSummary(SQLModel):
    id: uuid.UUID
    slot: datetime
    status: RunStatus
    trigger: RunTrigger
    coalesced_slots: int
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, int]
    error: str | None


class JobState(SQLModel):
    name: str
    schedule: str = Field(description="Cron, UTC.")
    enabled: bool
    paused: bool
    next_run: datetime | None
    last_run: RunSummary | None
    last_success_at: datetime | None


class JobStates(SQLModel):
    jobs: list[JobState]


_THIS_JOB = col(ScheduledJobRun.job) == bindparam("job")

# Queued runs have not started: they sort by their slot.
LAST_RUN = (
    select(*(col(getattr(ScheduledJobRun, name)) for name in RunSummary.model_fields))
    .where(_THIS_JOB)
    .order_by(func.coalesce(col(ScheduledJobRun.started_at), col(ScheduledJobRun.slot)).desc())
    .limit(1)
)

LAST_SUCCESS = select(func.max(col(ScheduledJobRun.finished_at))).where(
    _THIS_JOB, col(ScheduledJobRun.status) == RunStatus.succeeded
)


async def job_states(engine: AsyncEngine, schedules: dict[str, tuple[str, bool]], now: datetime) -> JobStates:
    """`schedules` maps each job to its cron and whether it is switched on, in the order the API lists them."""
    states = []
    async with engine.connect() as connection:
        paused = set((await connection.scalars(ALL_PAUSED)).all())
        for job, (cron, enabled) in schedules.items():
            last = (await connection.execute(LAST_RUN, {"job": job})).first()
            states.append(
                JobState(
                    name=job,
                    schedule=cron,
                    enabled=enabled,
                    paused=job in paused,
                    next_run=next_slot(cron, now) if enabled else None,
                    last_run=RunSummary.model_validate(last, from_attributes=True) if last else None,
                    last_success_at=await connection.scalar(LAST_SUCCESS, {"job": job}),
                )
            )
    return JobStates(jobs=states)
