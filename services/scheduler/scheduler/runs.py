"""Run records: the fence that makes each slot run once, whatever the number of replicas, and each run's life.

A slot is claimed by inserting (job, slot), unique, and publishing the run request before that insert
commits: a replica that dies in between leaves neither, so another claims the slot.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs import audit
from libs.contracts import RunScheduledJob
from libs.messaging.errors import TransientError
from libs.messaging.publisher import Publisher


class JobBusy(Exception):
    """A run of this job is queued or running: a second one would overlap."""


async def last_claimed(engine: AsyncEngine, job: str) -> datetime | None:
    async with engine.connect() as connection:
        value = await connection.scalar(
            text("SELECT max(slot) FROM scheduled_job_runs WHERE job = :job AND trigger <> 'manual'"), {"job": job}
        )
    return value  # type: ignore[no-any-return]


async def claim(
    engine: AsyncEngine, publisher: Publisher, job: str, slot: datetime, *, trigger: str, coalesced: int = 0,
    requested_by: str | None = None,
) -> uuid.UUID | None:  # fmt: skip
    """The run id when this replica claimed the slot, None when another one did."""
    async with engine.begin() as connection:
        run_id = await connection.scalar(
            text(
                "INSERT INTO scheduled_job_runs (job, slot, status, trigger, coalesced_slots, requested_by) "
                "VALUES (:job, :slot, 'queued', :trigger, :coalesced, :by) ON CONFLICT (job, slot) DO NOTHING "
                "RETURNING id"
            ),
            {"job": job, "slot": slot, "trigger": trigger, "coalesced": coalesced, "by": requested_by},
        )
        if run_id is None:
            return None
        await publisher.publish(RunScheduledJob(run_id=run_id, job=job), message_id=f"job-run:{run_id}")
    return uuid.UUID(str(run_id))


async def claim_manual(engine: AsyncEngine, publisher: Publisher, job: str, now: datetime, actor: str) -> uuid.UUID:
    async with engine.connect() as connection:
        busy = await connection.scalar(
            text("SELECT 1 FROM scheduled_job_runs WHERE job = :job AND status IN ('queued', 'running')"),
            {"job": job},
        )
    if busy:
        raise JobBusy(f"{job} is already queued or running")
    run_id = await claim(engine, publisher, job, now, trigger="manual", requested_by=actor)
    assert run_id is not None  # a manual slot is the current microsecond
    return run_id


async def start(engine: AsyncEngine, run_id: uuid.UUID, timeout_s: float) -> str | None:
    """Marks the run running and returns its job, or None when it already succeeded (a redelivery)."""
    async with engine.begin() as connection:
        run = (
            await connection.execute(
                text("SELECT job, status FROM scheduled_job_runs WHERE id = :id FOR UPDATE"), {"id": run_id}
            )
        ).first()
        if run is None:
            raise TransientError(f"run {run_id} is not committed yet")
        if run.status == "succeeded":
            return None
        overlapping = await connection.scalar(
            text(
                "SELECT 1 FROM scheduled_job_runs WHERE job = :job AND id <> :id AND status = 'running' "
                "AND started_at > now() - make_interval(secs => :timeout)"
            ),
            {"job": run.job, "id": run_id, "timeout": timeout_s},
        )
        if overlapping:
            # Retried with backoff by the consumer policy until the previous run is done.
            raise TransientError(f"a previous {run.job} run is still running")
        await connection.execute(
            text(
                "UPDATE scheduled_job_runs SET status = 'running', started_at = now(), attempts = attempts + 1, "
                "error = NULL WHERE id = :id"
            ),
            {"id": run_id},
        )
    return str(run.job)


async def finish(
    engine: AsyncEngine, run_id: uuid.UUID, job: str, counts: dict[str, Any] | None, error: str | None
) -> None:
    status = "failed" if error is not None else "succeeded"
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE scheduled_job_runs SET status = :status, finished_at = now(), counts = CAST(:counts AS jsonb), "
                "error = :error WHERE id = :id"
            ),
            {"status": status, "counts": orjson.dumps(counts or {}).decode(), "error": error, "id": run_id},
        )
        await audit.record(
            connection, actor="scheduler", action=f"job.{status}", entity_type="scheduled_job", entity_id=job,
            metadata={"run_id": run_id, "counts": counts or {}, "error": error},
        )  # fmt: skip
