"""Pausing a job: stored in the database, so it survives restarts and deploys and holds for every replica; audited."""

from __future__ import annotations

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col

from libs import audit
from libs.db.tables import ScheduledJob

IS_PAUSED = select(col(ScheduledJob.paused)).where(col(ScheduledJob.job) == bindparam("job"))

ALL_PAUSED = select(col(ScheduledJob.job)).where(col(ScheduledJob.paused))

_SWITCH = insert(ScheduledJob).values(
    job=bindparam("job"), paused=bindparam("paused"), changed_by=bindparam("changed_by"), changed_at=func.now()
)
SWITCH = _SWITCH.on_conflict_do_update(
    index_elements=[col(ScheduledJob.job)],
    set_={"paused": _SWITCH.excluded.paused, "changed_by": _SWITCH.excluded.changed_by, "changed_at": func.now()},
)


class PauseState(SQLModel):
    job: str
    paused: bool


async def is_paused(engine: AsyncEngine, job: str) -> bool:
    async with engine.connect() as connection:
        return bool(await connection.scalar(IS_PAUSED, {"job": job}))


async def set_paused(engine: AsyncEngine, job: str, actor: str, *, paused: bool) -> PauseState:
    async with engine.begin() as connection:
        await connection.execute(SWITCH, {"job": job, "paused": paused, "changed_by": actor})
        await audit.record(
            connection, actor=actor, action="job.paused" if paused else "job.resumed", entity_type="scheduled_job",
            entity_id=job,
        )  # fmt: skip
    return PauseState(job=job, paused=paused)
