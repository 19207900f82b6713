"""`/console`: every queue with the broker's and the store's numbers (the table refreshes itself), a banner for a
queue with messages and no consumer, and dead letters arriving per queue over the last day."""

from __future__ import annotations

import httpx
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service import arrivals, queues
from dlq_service.queue_stats import QueueStats
from dlq_service.queues import QueuesOverview, QueueState
from dlq_service.sessions import SessionUser
from libs.messaging.topology import TOPOLOGY
from libs.ratelimit import RateLimiter

REFRESH_S = 5


def without_consumer(overview: QueuesOverview) -> list[QueueState]:
    """Work queues holding messages that nobody consumes: nothing will drain them (the parking queue is meant to
    be left alone, so it is not one of them)."""
    work = {queue.name for queue in TOPOLOGY.work_queues} | {"dlq"}
    return [queue for queue in overview.queues
            if queue.name in work and (queue.depth or 0) > 0 and queue.consumers == 0]  # fmt: skip


async def _numbers(
    admin: SessionUser, engine: AsyncEngine, queue_stats: QueueStats, http: httpx.AsyncClient, limiter: RateLimiter
) -> dict[str, object]:
    # The API's limit per admin applies here too: the page refreshing itself stays far below it.
    wait = await limiter.retry_after(admin.subject)
    if wait is not None:
        return {"overview": None, "wait_s": wait, "unconsumed": []}
    overview = await queues.overview(engine, queue_stats, http)
    return {"overview": overview, "wait_s": None, "unconsumed": without_consumer(overview)}


class OverviewController(Controller):
    path = "/"

    @get("/", name="console:overview")
    async def overview(
        self,
        admin: NamedDependency[SessionUser],
        engine: NamedDependency[AsyncEngine],
        queue_stats: NamedDependency[QueueStats],
        http: NamedDependency[httpx.AsyncClient],
        queues_limiter: NamedDependency[RateLimiter],
    ) -> Template:
        numbers = await _numbers(admin, engine, queue_stats, http, queues_limiter)
        chart = await arrivals.last_day(engine, queues.queue_names())
        return Template(
            template_name="overview.html",
            context={"admin": admin, "nav": "overview", "refresh_s": REFRESH_S, "arrivals": chart, **numbers},
        )

    @get("/overview/live", name="console:overview-live")
    async def live(
        self,
        admin: NamedDependency[SessionUser],
        engine: NamedDependency[AsyncEngine],
        queue_stats: NamedDependency[QueueStats],
        http: NamedDependency[httpx.AsyncClient],
        queues_limiter: NamedDependency[RateLimiter],
    ) -> Template:
        """The queue table alone, for the page to swap in every few seconds."""
        numbers = await _numbers(admin, engine, queue_stats, http, queues_limiter)
        return Template(template_name="_queues.html", context=numbers)
