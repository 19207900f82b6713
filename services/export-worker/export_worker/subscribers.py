"""The `report-export` queue: write the CSV, then tell the requester it is ready."""

from faststream.rabbit import RabbitRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from export_worker.exports import run_export
from export_worker.metrics import ExportMetrics
from export_worker.settings import Settings
from libs.contracts import ExportReport, SendEmail
from libs.logging import get_logger
from libs.messaging.consumer import ConsumerPolicy, Delivery, subscribe
from libs.messaging.publisher import Publisher
from libs.messaging.topology import REPORT_EXPORT
from libs.telemetry import Telemetry

log = get_logger("export_worker")


def build_router(
    engine: AsyncEngine, settings: Settings, publisher: Publisher, telemetry: Telemetry, metrics: ExportMetrics
) -> RabbitRouter:
    async def on_export_report(job: ExportReport, delivery: Delivery) -> None:
        finished = await run_export(engine, job.export_id, settings.export_dir, settings.export_batch_rows)
        if not finished.already_done:
            metrics.rows_written.add(finished.row_count)
            metrics.export_duration.record(finished.duration_ms)
        if finished.requested_email:
            await publisher.publish(
                SendEmail(template="export_ready", to=finished.requested_email,
                          params={"export_id": str(job.export_id), "row_count": finished.row_count}),
                message_id=f"email:export_ready:{job.export_id}",
            )  # fmt: skip
        log.info("export.ready", {"export_id": str(job.export_id), "rows": finished.row_count, "bytes": finished.bytes})

    router = RabbitRouter()
    policy = ConsumerPolicy(
        REPORT_EXPORT, {ExportReport: on_export_report}, publisher, telemetry, service="export-worker",
        handler_timeout_s=settings.handler_timeout_s,
    )  # fmt: skip
    subscribe(router, policy)
    return router
