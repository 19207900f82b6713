"""Run records: the fence that makes each slot run once, whatever the number of replicas, and each run's life.

A slot is claimed by inserting (job, slot), unique, and publishing the run request before that insert
commits: a replica that dies in between leaves neither, so another claims the slot.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Interval, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col

from libs import audit
from libs.contracts import RunScheduledJob
from libs.db.tables import RunStatus, RunTrigger, ScheduledJobRun
from libs.messaging.errors import TransientError
from libs.messaging.publisher import Publisher

_THIS_JOB = col(ScheduledJobRun.job) == bindparam("job")
_THIS_RUN = col(ScheduledJobRun.id) == bindparam("run_id")

LAST_CLAIMED = select(func.max(col(ScheduledJobRun.slot))).where(
    _THIS_JOB, col(ScheduledJobRun.trigger) != RunTrigger.manual
)

CLAIM = (
    insert(ScheduledJobRun)
    .values(
        job=bindparam("job"),
        slot=bindparam("slot"),
        status=RunStatus.queued,
        trigger=bindparam("trigger"),
        coalesced_slots=bindparam("coalesced_slots"),
        requested_by=bindparam("requested_by"),
    )
    .on_conflict_do_nothing(index_elements=[col(ScheduledJobRun.job), col(ScheduledJobRun.slot)])
    .returning(col(ScheduledJobRun.id))
)

# A run started longer ago than the handler timeout has failed, whatever its row still says.
_RUNNING_WITHIN_TIMEOUT = and_(
    col(ScheduledJobRun.status) == RunStatus.running,
    col(ScheduledJobRun.started_at) > func.now() - bindparam("timeout", type_=Interval),
)

# A run queued or started longer ago than the handler timeout does not count: its request was lost (a queue purged, a
# replica gone between claiming and publishing on a broker since rebuilt) or it has failed, and `start` keeps a new
# run from overlapping one still going either way. Counted, such a run answered 409 to every "run now" forever.
BUSY = select(
    exists().where(
        _THIS_JOB,
        or_(
            and_(
                col(ScheduledJobRun.status) == RunStatus.queued,
                col(ScheduledJobRun.slot)
                > bindparam("now", type_=DateTime(timezone=True)) - bindparam("timeout", type_=Interval),
            ),
            _RUNNING_WITHIN_TIMEOUT,
        ),
    )
)

LOCK_RUN = select(col(ScheduledJobRun.job), col(ScheduledJobRun.status)).where(_THIS_RUN).with_for_update()

STILL_RUNNING = select(
    exists().where(_THIS_JOB, col(ScheduledJobRun.id) != bindparam("run_id"), _RUNNING_WITHIN_TIMEOUT)
)

MARK_RUNNING = (
    update(ScheduledJobRun)
    .where(_THIS_RUN)
    .values(
        status=RunStatus.running,
        started_at=func.now(),
        attempts=col(ScheduledJobRun.attempts) + 1,
        error=None,
    )
)

MARK_FINISHED = (
    update(ScheduledJobRun)
    .where(_THIS_RUN)
    .values(status=bindparam("status"), finished_at=func.now(), counts=bindparam("counts"), error=bindparam("error"))
)


class JobBusy(Exception):
    """A run of this job is queued or running: a second one would overlap."""


class RunRequested(SQLModel):
    job: str
    run_id: uuid.UUID
    status: RunStatus


async def last_claimed(engine: AsyncEngine, job: str) -> datetime | None:
    async with engine.connect() as connection:
        return await connection.scalar(LAST_CLAIMED, {"job": job})


async def claim(
    engine: AsyncEngine, publisher: Publisher, job: str, slot: datetime, *, trigger: RunTrigger, coalesced: int = 0,
    requested_by: str | None = None,
) -> uuid.UUID | None:  # fmt: skip
    """The run id when this replica claimed the slot, None when another one did."""
    async with engine.begin() as connection:
        run_id = await connection.scalar(
            CLAIM,
            {"job": job, "slot": slot, "trigger": trigger, "coalesced_slots": coalesced, "requested_by": requested_by},
        )
        if run_id is None:
            return None
        await publisher.publish(RunScheduledJob(run_id=run_id, job=job), message_id=f"job-run:{run_id}")
    return run_id


async def request_run(
    engine: AsyncEngine, publisher: Publisher, job: str, now: datetime, actor: str, *, timeout_s: float
) -> RunRequested:
    """A manual run at `now`, audited; JobBusy while a run of the job is queued or running, within the handler
    timeout (`timeout_s`)."""
    async with engine.connect() as connection:
        busy = await connection.scalar(BUSY, {"job": job, "now": now, "timeout": timedelta(seconds=timeout_s)})
    if busy:
        raise JobBusy(f"{job} is already queued or running")
    run_id = await claim(engine, publisher, job, now, trigger=RunTrigger.manual, requested_by=actor)
    assert run_id is not None  # a manual slot is the current microsecond
    async with engine.begin() as connection:
        await audit.record(
            connection, actor=actor, action="job.run_requested", entity_type="scheduled_job", entity_id=job,
            metadata={"run_id": run_id},
        )  # fmt: skip
    return RunRequested(job=job, run_id=run_id, status=RunStatus.queued)


async def start(engine: AsyncEngine, run_id: uuid.UUID, timeout_s: float) -> str | None:
    """Marks the run running and returns its job, or None when it already succeeded (a redelivery)."""
    async with engine.begin() as connection:
        run = (await connection.execute(LOCK_RUN, {"run_id": run_id})).first()
        if run is None:
            raise TransientError(f"run {run_id} is not committed yet")
        if run.status == RunStatus.succeeded:
            return None
        overlapping = await connection.scalar(
            STILL_RUNNING, {"job": run.job, "run_id": run_id, "timeout": timedelta(seconds=timeout_s)}
        )
        if overlapping:
            # Retried with backoff by the consumer policy until the previous run is done.
            raise TransientError(f"a previous {run.job} run is still running")
        await connection.execute(MARK_RUNNING, {"run_id": run_id})
    return str(run.job)


async def finish(
    engine: AsyncEngine, run_id: uuid.UUID, job: str, counts: dict[str, Any] | None, error: str | None
) -> RunStatus:
    status = RunStatus.failed if error is not None else RunStatus.succeeded
    async with engine.begin() as connection:
        await connection.execute(
            MARK_FINISHED, {"run_id": run_id, "status": status, "counts": counts or {}, "error": error}
        )
        await audit.record(
            connection, actor="scheduler", action=f"job.{status}", entity_type="scheduled_job", entity_id=job,
            metadata={"run_id": run_id, "counts": counts or {}, "error": error},
        )  # fmt: skip
    return status
