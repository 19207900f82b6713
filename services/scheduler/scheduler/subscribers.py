"""The `scheduled-jobs` queue: run a claimed slot's job. Failures are retried with backoff by the consumer
policy and dead-lettered after the last attempt, like any other work."""

import time

from faststream.rabbit import RabbitRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.contracts import RunScheduledJob
from libs.logging import get_logger
from libs.messaging.consumer import ConsumerPolicy, Delivery, subscribe
from libs.messaging.publisher import Publisher
from libs.messaging.topology import SCHEDULED_JOBS
from libs.telemetry import Telemetry
from scheduler.jobs import JOBS, JobContext
from scheduler.metrics import LastSuccessPoller, SchedulerMetrics
from scheduler.runs import finish, start
from scheduler.settings import Settings

log = get_logger("scheduler")


def build_router(
    engine: AsyncEngine,
    publisher: Publisher,
    telemetry: Telemetry,
    metrics: SchedulerMetrics,
    last_success: LastSuccessPoller,
    settings: Settings,
) -> RabbitRouter:
    async def on_run_scheduled_job(request: RunScheduledJob, delivery: Delivery) -> None:
        job = await start(engine, request.run_id, settings.handler_timeout_s)
        if job is None:
            return
        context = JobContext(engine, publisher, request.run_id, settings.dlq_retention_days, settings.dlq_cleanup_batch)
        started = time.perf_counter()
        try:
            counts = await JOBS[job](context)
        except Exception as error:
            status = await finish(engine, request.run_id, job, None, f"{type(error).__name__}: {error}"[:2000])
            metrics.runs.add(1, {"scheduled_job": job, "status": status})
            raise
        finally:
            metrics.duration.record((time.perf_counter() - started) * 1000, {"scheduled_job": job})
        status = await finish(engine, request.run_id, job, counts, None)
        metrics.runs.add(1, {"scheduled_job": job, "status": status})
        metrics.discrepancies.add(counts.get("discrepancies", 0))
        await last_success.refresh()
        log.info("job.succeeded", {"job": job, "run_id": str(request.run_id), "counts": counts})

    router = RabbitRouter()
    subscribe(
        router,
        ConsumerPolicy(
            SCHEDULED_JOBS, {RunScheduledJob: on_run_scheduled_job}, publisher, telemetry, service="scheduler",
            handler_timeout_s=settings.handler_timeout_s,
        ),
    )  # fmt: skip
    return router
