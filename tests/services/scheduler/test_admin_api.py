"""The jobs admin API: list, run now (409 while running), pause and resume that survive restarts, audited."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import func, insert, select, update
from sqlmodel import col

from libs.db.tables import AuditEntry, RunStatus, RunTrigger, ScheduledJob, ScheduledJobRun
from libs.telemetry import setup_telemetry
from scheduler.main import build
from scheduler.settings import Settings
from tests.services.conftest import Pipeline, eventually, settings_for

pytestmark = [pytest.mark.broker, pytest.mark.database]
JOBS = "/api/v1/admin/jobs"


@pytest.fixture
async def scheduler(pipeline: Pipeline) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app, _ = build(settings_for(Settings, pipeline.service_env), setup_telemetry("scheduler"))
    async with AsyncTestClient(app) as client:
        yield client


async def paused_in_database(pipeline: Pipeline, job: str) -> bool | None:
    async with pipeline.engine.connect() as connection:
        return await connection.scalar(select(col(ScheduledJob.paused)).where(col(ScheduledJob.job) == job))


async def run_status(pipeline: Pipeline, run_id: uuid.UUID) -> RunStatus | None:
    async with pipeline.engine.connect() as connection:
        return await connection.scalar(select(col(ScheduledJobRun.status)).where(col(ScheduledJobRun.id) == run_id))


async def test_lists_every_job_with_schedule_and_state(
    scheduler: AsyncTestClient[Litestar], pipeline: Pipeline
) -> None:
    jobs = (await scheduler.get(JOBS, headers=await pipeline.admin_headers())).json()["jobs"]
    assert [job["name"] for job in jobs] == ["subscription-reactivation", "balance-reconciliation", "dlq-cleanup"]
    assert jobs[0]["schedule"] == "*/5 * * * *"
    assert {"enabled", "paused", "next_run", "last_run", "last_success_at"} <= jobs[0].keys()


async def test_a_finished_run_shows_as_the_jobs_last_run_and_last_success(
    scheduler: AsyncTestClient[Litestar], pipeline: Pipeline
) -> None:
    admin = await pipeline.admin_headers()
    run_id = (await scheduler.post(f"{JOBS}/balance-reconciliation/run", headers=admin)).json()["run_id"]

    async def succeeded() -> bool:
        return await run_status(pipeline, uuid.UUID(run_id)) == RunStatus.succeeded

    await eventually(succeeded)
    listed = (await scheduler.get(JOBS, headers=admin)).json()["jobs"]
    job = next(job for job in listed if job["name"] == "balance-reconciliation")
    assert job["last_run"]["id"] == run_id
    assert job["last_run"]["status"] == RunStatus.succeeded
    assert job["last_run"]["trigger"] == RunTrigger.manual
    assert "providers_checked" in job["last_run"]["counts"]
    assert job["last_success_at"] == job["last_run"]["finished_at"]


async def test_run_now_runs_the_job_and_a_second_request_while_it_runs_is_409(
    scheduler: AsyncTestClient[Litestar], pipeline: Pipeline
) -> None:
    admin = await pipeline.admin_headers()
    response = await scheduler.post(f"{JOBS}/balance-reconciliation/run", headers=admin)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == RunStatus.queued
    run_id = uuid.UUID(response.json()["run_id"])

    async def succeeded() -> bool:
        return await run_status(pipeline, run_id) == RunStatus.succeeded

    await eventually(succeeded)
    running = col(ScheduledJobRun.job) == "dlq-cleanup", col(ScheduledJobRun.status) == RunStatus.running
    async with pipeline.engine.begin() as connection:
        await connection.execute(
            insert(ScheduledJobRun).values(job="dlq-cleanup", slot=func.clock_timestamp(), status=RunStatus.running,
                                           trigger=RunTrigger.manual, started_at=func.now())
        )  # fmt: skip
    try:
        busy = await scheduler.post(f"{JOBS}/dlq-cleanup/run", headers=admin)
        assert busy.status_code == 409
    finally:
        async with pipeline.engine.begin() as connection:
            await connection.execute(update(ScheduledJobRun).where(*running).values(status=RunStatus.failed))
    assert (await scheduler.post(f"{JOBS}/no-such-job/run", headers=admin)).status_code == 404


async def test_a_run_left_queued_or_running_past_the_handler_timeout_does_not_block_run_now(
    scheduler: AsyncTestClient[Litestar], pipeline: Pipeline
) -> None:
    # A run whose request never reached a consumer (a queue purged, a replica gone on a broker since rebuilt) stays
    # queued; one whose worker died stays running. Past the handler timeout neither answers 409 any more; a run
    # queued within it still does.
    admin = await pipeline.admin_headers()
    timeout = timedelta(seconds=settings_for(Settings, pipeline.service_env).handler_timeout_s)
    job = "balance-reconciliation"
    now = datetime.now(UTC)
    planted = [
        {"slot": now - timeout - timedelta(minutes=1), "status": RunStatus.queued},
        {"slot": now - timeout - timedelta(minutes=2), "status": RunStatus.running,
         "started_at": now - timeout - timedelta(minutes=2)},
    ]  # fmt: skip
    async with pipeline.engine.begin() as connection:
        ids = [
            await connection.scalar(
                insert(ScheduledJobRun)
                .values(job=job, trigger=RunTrigger.schedule, **row)
                .returning(col(ScheduledJobRun.id))
            )
            for row in planted
        ]
    try:
        stale = await scheduler.post(f"{JOBS}/{job}/run", headers=admin)
        assert stale.status_code == 202, stale.text
        run_id = uuid.UUID(stale.json()["run_id"])

        async def finished() -> bool:
            return await run_status(pipeline, run_id) in (RunStatus.succeeded, RunStatus.failed)

        await eventually(finished)
        async with pipeline.engine.begin() as connection:
            ids.append(
                await connection.scalar(
                    insert(ScheduledJobRun)
                    .values(
                        job=job, trigger=RunTrigger.schedule, slot=now - timedelta(seconds=10), status=RunStatus.queued
                    )
                    .returning(col(ScheduledJobRun.id))
                )
            )
        assert (await scheduler.post(f"{JOBS}/{job}/run", headers=admin)).status_code == 409
    finally:
        async with pipeline.engine.begin() as connection:
            await connection.execute(
                update(ScheduledJobRun).where(col(ScheduledJobRun.id).in_(ids)).values(status=RunStatus.failed)
            )


async def test_pause_is_stored_and_audited_then_resume(
    scheduler: AsyncTestClient[Litestar], pipeline: Pipeline
) -> None:
    admin = await pipeline.admin_headers()
    paused = await scheduler.post(f"{JOBS}/dlq-cleanup/pause", headers=admin)
    assert paused.json() == {"job": "dlq-cleanup", "paused": True}
    assert await paused_in_database(pipeline, "dlq-cleanup") is True
    listed = (await scheduler.get(JOBS, headers=admin)).json()["jobs"]
    assert next(job for job in listed if job["name"] == "dlq-cleanup")["paused"] is True
    resumed = await scheduler.post(f"{JOBS}/dlq-cleanup/resume", headers=admin)
    assert resumed.json() == {"job": "dlq-cleanup", "paused": False}
    assert await paused_in_database(pipeline, "dlq-cleanup") is False
    async with pipeline.engine.connect() as connection:
        actions = await connection.scalars(
            select(col(AuditEntry.action))
            .where(
                col(AuditEntry.entity_id) == "dlq-cleanup", col(AuditEntry.action).in_(["job.paused", "job.resumed"])
            )
            .order_by(col(AuditEntry.id).desc())
            .limit(2)
        )
    assert list(actions) == ["job.resumed", "job.paused"]


async def test_every_response_of_the_jobs_api_has_a_schema(scheduler: AsyncTestClient[Litestar]) -> None:
    paths = (await scheduler.get("/schema/openapi.json")).json()["paths"]
    operations = [paths[JOBS]["get"]] + [
        paths[f"{JOBS}/{{name}}/{action}"]["post"] for action in ("run", "pause", "resume")
    ]
    for operation in operations:
        [success] = [response for code, response in operation["responses"].items() if code.startswith("2")]
        assert "$ref" in success["content"]["application/json"]["schema"], operation["operationId"]


async def test_the_jobs_api_needs_an_admin_with_mfa(scheduler: AsyncTestClient[Litestar], pipeline: Pipeline) -> None:
    assert (await scheduler.get(JOBS)).status_code == 401
    provider_id = await pipeline.provider(
        await pipeline.admin_headers(), category="c", zips=["11111"], price_cents=1, balance_cents=0
    )
    assert (await scheduler.get(JOBS, headers=await pipeline.provider_headers(provider_id))).status_code == 403
