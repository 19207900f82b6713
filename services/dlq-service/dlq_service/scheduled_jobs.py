"""Scheduled jobs as the console shows and drives them: the scheduler owns them (their schedules are its settings,
run now is its fenced claim), so the console asks its admin API, as the admin who clicked, and reads the recent
runs of each job from its run records."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError
from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col

from libs.auth import Principal, Tokens
from libs.db.tables import RunStatus, RunTrigger, ScheduledJobRun

RECENT_RUNS = 5
JobAction = Literal["run", "pause", "resume"]
ACTIONS: tuple[JobAction, ...] = ("run", "pause", "resume")


class SchedulerUnavailable(Exception):
    """The scheduler's admin API is not configured, did not answer, or answered what this console cannot read."""


class JobRefused(Exception):
    """The scheduler refused the action (a run already queued or running, an unknown job): its own words."""


class RunRecord(SQLModel):
    id: uuid.UUID
    slot: datetime
    status: RunStatus
    trigger: RunTrigger
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    counts: dict[str, Any]
    error: str | None
    requested_by: str | None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 2)


class SchedulerJob(BaseModel):
    """A job as the scheduler's `GET /api/v1/admin/jobs` describes it (the fields the console shows)."""

    name: str
    schedule: str
    enabled: bool
    paused: bool
    next_run: datetime | None
    last_success_at: datetime | None


class SchedulerJobs(BaseModel):
    jobs: list[SchedulerJob]


class JobOverview(SQLModel):
    job: SchedulerJob
    runs: list[RunRecord]


_RUNS = (
    select(*(col(getattr(ScheduledJobRun, name)) for name in RunRecord.model_fields))
    .where(col(ScheduledJobRun.job) == bindparam("job"))
    .order_by(func.coalesce(col(ScheduledJobRun.started_at), col(ScheduledJobRun.slot)).desc())
    .limit(RECENT_RUNS)
)


class SchedulerApi:
    """The scheduler's admin API, called with a token of the console's admin that lives one minute: the scheduler
    checks role and MFA and audits the action under that admin's id, as for a call from any other client."""

    def __init__(self, base_url: str | None, tokens: Tokens, http: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.tokens = tokens
        self.http = http

    def _headers(self, admin_id: str) -> dict[str, str]:
        # The session was opened with password and TOTP: the token says so, and says nothing else.
        principal = Principal(subject=admin_id, role="admin", provider_id=None, amr=("pwd", "otp"))
        return {"Authorization": f"Bearer {self.tokens.issue(principal)}"}

    async def _call(self, method: str, path: str, admin_id: str) -> httpx.Response:
        if self.base_url is None:
            raise SchedulerUnavailable("SCHEDULER_URL is not set for the dlq-service")
        try:
            return await self.http.request(method, f"{self.base_url}/api/v1/admin/jobs{path}",
                                           headers=self._headers(admin_id))  # fmt: skip
        except httpx.HTTPError as error:
            raise SchedulerUnavailable(f"the scheduler did not answer: {type(error).__name__}") from None

    async def jobs(self, admin_id: str) -> list[SchedulerJob]:
        response = await self._call("GET", "", admin_id)
        if response.status_code != 200:
            raise SchedulerUnavailable(f"the scheduler answered {response.status_code}")
        try:
            return SchedulerJobs.model_validate_json(response.content).jobs
        except ValidationError:
            raise SchedulerUnavailable("the scheduler's answer is not a list of jobs") from None

    async def act(self, name: str, action: JobAction, admin_id: str) -> None:
        """Raises JobRefused with the scheduler's reason (409, 404), SchedulerUnavailable otherwise."""
        response = await self._call("POST", f"/{quote(name, safe='')}/{action}", admin_id)
        if response.status_code in (404, 409):
            raise JobRefused(_detail(response))
        if response.status_code not in (200, 202):
            raise SchedulerUnavailable(f"the scheduler answered {response.status_code}")


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail) if detail else f"refused ({response.status_code})"


async def overview(engine: AsyncEngine, scheduler: SchedulerApi, admin_id: str) -> list[JobOverview]:
    """Raises SchedulerUnavailable."""
    jobs = await scheduler.jobs(admin_id)
    async with engine.connect() as connection:
        return [
            JobOverview(
                job=job,
                runs=[RunRecord.model_validate(dict(row))
                      for row in (await connection.execute(_RUNS, {"job": job.name})).mappings()],
            )
            for job in jobs
        ]  # fmt: skip
