"""The jobs admin API: list, run now (409 while running), pause and resume that survive restarts, audited."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from sqlalchemy import text

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


async def test_lists_every_job_with_schedule_and_state(
    scheduler: AsyncTestClient[Litestar], pipeline: Pipeline
) -> None:
    jobs = (await scheduler.get(JOBS, headers=await pipeline.admin_headers())).json()["jobs"]
    assert [job["name"] for job in jobs] == ["subscription-reactivation", "balance-reconciliation", "dlq-cleanup"]
    assert jobs[0]["schedule"] == "*/5 * * * *"
    assert {"enabled", "paused", "next_run", "last_run", "last_success_at"} <= jobs[0].keys()


async def test_run_now_runs_the_job_and_a_second_request_while_it_runs_is_409(
    scheduler: AsyncTestClient[Litestar], pipeline: Pipeline
) -> None:
    admin = await pipeline.admin_headers()
    response = await scheduler.post(f"{JOBS}/balance-reconciliation/run", headers=admin)
    assert response.status_code == 202, response.text
    run_id = uuid.UUID(response.json()["run_id"])

    async def succeeded() -> bool:
        return bool(
            await pipeline.scalar("SELECT status FROM scheduled_job_runs WHERE id = :id", id=run_id) == "succeeded"
        )

    await eventually(succeeded)
    async with pipeline.engine.begin() as connection:
        await connection.execute(
            text("INSERT INTO scheduled_job_runs (job, slot, status, trigger, started_at) "
                 "VALUES ('dlq-cleanup', clock_timestamp(), 'running', 'manual', now())")
        )  # fmt: skip
    try:
        busy = await scheduler.post(f"{JOBS}/dlq-cleanup/run", headers=admin)
        assert busy.status_code == 409
    finally:
        async with pipeline.engine.begin() as connection:
            await connection.execute(
                text("UPDATE scheduled_job_runs SET status = 'failed' WHERE job = 'dlq-cleanup' AND status = 'running'")
            )
    assert (await scheduler.post(f"{JOBS}/no-such-job/run", headers=admin)).status_code == 404


async def test_pause_is_stored_and_audited_then_resume(
    scheduler: AsyncTestClient[Litestar], pipeline: Pipeline
) -> None:
    admin = await pipeline.admin_headers()
    paused = await scheduler.post(f"{JOBS}/dlq-cleanup/pause", headers=admin)
    assert paused.json() == {"job": "dlq-cleanup", "paused": True}
    assert await pipeline.scalar("SELECT paused FROM scheduled_jobs WHERE job = 'dlq-cleanup'") is True
    listed = (await scheduler.get(JOBS, headers=admin)).json()["jobs"]
    assert next(job for job in listed if job["name"] == "dlq-cleanup")["paused"] is True
    await scheduler.post(f"{JOBS}/dlq-cleanup/resume", headers=admin)
    assert await pipeline.scalar("SELECT paused FROM scheduled_jobs WHERE job = 'dlq-cleanup'") is False
    async with pipeline.engine.connect() as connection:
        actions = (await connection.execute(text(
            "SELECT action FROM audit_log WHERE entity_id = 'dlq-cleanup' AND action IN ('job.paused', 'job.resumed') "
            "ORDER BY id DESC LIMIT 2"))).scalars().all()  # fmt: skip
    assert list(actions) == ["job.resumed", "job.paused"]


async def test_the_jobs_api_needs_an_admin_with_mfa(scheduler: AsyncTestClient[Litestar], pipeline: Pipeline) -> None:
    assert (await scheduler.get(JOBS)).status_code == 401
    provider_id = await pipeline.provider(
        await pipeline.admin_headers(), category="c", zips=["11111"], price_cents=1, balance_cents=0
    )
    assert (await scheduler.get(JOBS, headers=await pipeline.provider_headers(provider_id))).status_code == 403
