"""`/api/v1/admin/jobs`: each job's schedule and state; run now, pause, resume. Admin with MFA; audited."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotFoundException
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.auth import Principal
from libs.messaging.publisher import Publisher
from libs.web import error_responses
from scheduler.clock import Clock
from scheduler.overview import JobStates, job_states
from scheduler.pauses import PauseState, set_paused
from scheduler.runs import JobBusy, RunRequested, request_run
from scheduler.settings import Settings


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
    ) -> JobStates:
        return await job_states(engine, settings.schedules(), clock.now())

    @post("/{name:str}/run", status_code=HTTP_202_ACCEPTED, responses=error_responses(409))
    async def run_now(
        self,
        name: FromPath[str],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        publisher: NamedDependency[Publisher],
        settings: NamedDependency[Settings],
        clock: NamedDependency[Clock],
    ) -> RunRequested:
        """Queues a run now; 409 while a run of the job is queued or running (one queued or started longer ago than
        the handler timeout no longer counts)."""
        _known(settings, name)
        try:
            return await request_run(
                engine, publisher, name, clock.now(), principal.subject, timeout_s=settings.handler_timeout_s
            )
        except JobBusy as error:
            raise ClientException(status_code=HTTP_409_CONFLICT, detail=str(error)) from None

    @post("/{name:str}/pause", status_code=200)
    async def pause(
        self,
        name: FromPath[str],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        settings: NamedDependency[Settings],
    ) -> PauseState:
        """Stored in the database: survives restarts and deploys, and holds for every replica."""
        _known(settings, name)
        return await set_paused(engine, name, principal.subject, paused=True)

    @post("/{name:str}/resume", status_code=200)
    async def resume(
        self,
        name: FromPath[str],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        settings: NamedDependency[Settings],
    ) -> PauseState:
        _known(settings, name)
        return await set_paused(engine, name, principal.subject, paused=False)
