"""`/api/v1/admin/jobs`: each job's schedule and state; run now, pause, resume. Admin with MFA; audited."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs import audit
from libs.auth import Principal
from libs.messaging.publisher import Publisher
from scheduler.clock import Clock
from scheduler.runs import JobBusy, claim_manual
from scheduler.schedule import next_slot
from scheduler.settings import Settings

RUN_COLUMNS = "id, slot, status, trigger, coalesced_slots, attempts, started_at, finished_at, counts, error"


def _known(settings: Settings, name: str) -> None:
    if name not in settings.schedules():
        raise NotFoundException(f"no job named {name!r}")


class JobsController(Controller):
    path = "/api/v1/admin/jobs"
    tags = ["admin: scheduled jobs"]  # noqa: RUF012
    security = [{"bearer": []}]  # noqa: RUF012

    @get("/")
    async def jobs(
        self,
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        settings: NamedDependency[Settings],
        clock: NamedDependency[Clock],
    ) -> dict[str, list[dict[str, Any]]]:
        now = clock.now()
        result = []
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT job, paused FROM scheduled_jobs"))
            paused: dict[str, bool] = {row.job: row.paused for row in rows}
            for job, (cron, enabled) in settings.schedules().items():
                last = (
                    await connection.execute(
                        text(
                            f"SELECT {RUN_COLUMNS} FROM scheduled_job_runs WHERE job = :job "  # noqa: S608
                            "ORDER BY COALESCE(started_at, slot) DESC LIMIT 1"
                        ),
                        {"job": job},
                    )
                ).first()
                last_success = await connection.scalar(
                    text("SELECT max(finished_at) FROM scheduled_job_runs WHERE job = :job AND status = 'succeeded'"),
                    {"job": job},
                )
                result.append(
                    {"name": job, "schedule": cron, "enabled": enabled, "paused": bool(paused.get(job, False)),
                     "next_run": next_slot(cron, now) if enabled else None,
                     "last_run": dict(last._mapping) if last else None, "last_success_at": last_success}
                )  # fmt: skip
        return {"jobs": result}

    @post("/{name:str}/run", status_code=HTTP_202_ACCEPTED)
    async def run_now(
        self,
        name: FromPath[str],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        publisher: NamedDependency[Publisher],
        settings: NamedDependency[Settings],
        clock: NamedDependency[Clock],
    ) -> dict[str, Any]:
        """Queues a run now; 409 while a run of the job is queued or running."""
        _known(settings, name)
        try:
            run_id = await claim_manual(engine, publisher, name, clock.now(), principal.subject)
        except JobBusy as error:
            raise ClientException(status_code=HTTP_409_CONFLICT, detail=str(error)) from None
        async with engine.begin() as connection:
            await audit.record(
                connection, actor=principal.subject, action="job.run_requested", entity_type="scheduled_job",
                entity_id=name, metadata={"run_id": run_id},
            )  # fmt: skip
        return {"job": name, "run_id": run_id, "status": "queued"}

    @post("/{name:str}/pause", status_code=200)
    async def pause(
        self,
        name: FromPath[str],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        settings: NamedDependency[Settings],
    ) -> dict[str, Any]:
        """Stored in the database: survives restarts and deploys, and holds for every replica."""
        return await _set_paused(engine, settings, name, principal, paused=True)

    @post("/{name:str}/resume", status_code=200)
    async def resume(
        self,
        name: FromPath[str],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        settings: NamedDependency[Settings],
    ) -> dict[str, Any]:
        return await _set_paused(engine, settings, name, principal, paused=False)


async def _set_paused(
    engine: AsyncEngine, settings: Settings, name: str, principal: Principal, *, paused: bool
) -> dict[str, Any]:
    _known(settings, name)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO scheduled_jobs (job, paused, changed_by, changed_at) VALUES (:job, :paused, :by, now()) "
                "ON CONFLICT (job) DO UPDATE SET paused = EXCLUDED.paused, changed_by = EXCLUDED.changed_by, "
                "changed_at = now()"
            ),
            {"job": name, "paused": paused, "by": principal.subject},
        )
        await audit.record(
            connection, actor=principal.subject, action="job.paused" if paused else "job.resumed",
            entity_type="scheduled_job", entity_id=name,
        )  # fmt: skip
    return {"job": name, "paused": paused}
