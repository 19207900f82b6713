"""`/console/jobs`: each scheduled job with its schedule, pause switch, next run and last runs; run now, pause,
resume, done by the scheduler itself (its admin API) as the admin who clicked."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_409_CONFLICT, HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service import scheduled_jobs
from dlq_service.console.forms import NOTICES, job_anchor, link
from dlq_service.scheduled_jobs import ACTIONS, JobRefused, SchedulerApi, SchedulerUnavailable
from dlq_service.sessions import SessionUser


async def _page(
    engine: AsyncEngine, scheduler: SchedulerApi, admin: SessionUser, *, notice: str | None, problem: str | None,
    status_code: int = 200,
) -> Template:  # fmt: skip
    try:
        jobs, unavailable = await scheduled_jobs.overview(engine, scheduler, admin.subject), None
    except SchedulerUnavailable as error:
        jobs, unavailable = [], str(error)
    return Template(
        template_name="jobs.html",
        status_code=HTTP_503_SERVICE_UNAVAILABLE if unavailable else status_code,
        context={"admin": admin, "nav": "jobs", "jobs": jobs, "unavailable": unavailable, "notice": notice,
                 "problem": problem, "anchor": job_anchor, "actions": ACTIONS},
    )  # fmt: skip


class JobsController(Controller):
    path = "/jobs"

    @get("/", name="console:jobs")
    async def jobs(
        self,
        request: Request[Any, Any, Any],
        admin: NamedDependency[SessionUser],
        engine: NamedDependency[AsyncEngine],
        scheduler_api: NamedDependency[SchedulerApi],
    ) -> Template:
        notice = NOTICES.get(request.query_params.get("notice") or "")
        return await _page(engine, scheduler_api, admin, notice=notice, problem=None)

    @post("/{name:str}/{action:str}", name="console:job-action")
    async def act(
        self,
        name: FromPath[str],
        action: FromPath[str],
        admin: NamedDependency[SessionUser],
        engine: NamedDependency[AsyncEngine],
        scheduler_api: NamedDependency[SchedulerApi],
    ) -> Template | Redirect:
        chosen = next((known for known in ACTIONS if known == action), None)
        if chosen is None:
            raise NotFoundException(f"no action {action!r}")
        try:
            await scheduler_api.act(name, chosen, admin.subject)
        except JobRefused as refused:
            return await _page(engine, scheduler_api, admin, notice=None, problem=f"{name}: {refused}",
                               status_code=HTTP_409_CONFLICT)  # fmt: skip
        except SchedulerUnavailable as error:
            return await _page(engine, scheduler_api, admin, notice=None, problem=str(error))
        return Redirect(path=link("/console/jobs", notice=f"job-{chosen}") + "#" + job_anchor(name), status_code=303)
