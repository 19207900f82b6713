"""The `report_export` queue: one router, one handler per message type.

The foundation stage validates each job against its contract, logs it and acks; the real work builds on
these handlers.
"""

from faststream.rabbit import RabbitRouter

from export_worker.metrics import ExportMetrics
from libs.contracts import ExportReport
from libs.logging import get_logger
from libs.messaging.consumer import ConsumerPolicy, Delivery, subscribe
from libs.messaging.publisher import Publisher
from libs.messaging.topology import REPORT_EXPORT
from libs.telemetry import Telemetry

log = get_logger("export_worker")


def build_router(
    publisher: Publisher, telemetry: Telemetry, metrics: ExportMetrics, *, handler_timeout_s: float
) -> RabbitRouter:
    async def on_export_report(job: ExportReport, delivery: Delivery) -> None:
        metrics.received.add(1, {"type": job.message_type})
        log.info("export_job.received", {"export_id": str(job.export_id), "attempt": delivery.attempt})

    router = RabbitRouter()
    policy = ConsumerPolicy(
        REPORT_EXPORT,
        {ExportReport: on_export_report},
        publisher,
        telemetry,
        service="export-worker",
        handler_timeout_s=handler_timeout_s,
    )
    subscribe(router, policy)
    return router
