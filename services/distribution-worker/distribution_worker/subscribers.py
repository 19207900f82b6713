"""The `distribution` queue: one router, one handler per message type.

The foundation stage validates each event against its contract, logs it and acks; assignment and
billing build on these handlers.
"""

from faststream.rabbit import RabbitRouter

from distribution_worker.metrics import DistributionMetrics
from libs.contracts import LeadApproved, LeadSubmitted
from libs.logging import get_logger
from libs.messaging.consumer import ConsumerPolicy, Delivery, subscribe
from libs.messaging.publisher import Publisher
from libs.messaging.topology import DISTRIBUTION
from libs.telemetry import Telemetry

log = get_logger("distribution_worker")


def build_router(
    publisher: Publisher, telemetry: Telemetry, metrics: DistributionMetrics, *, handler_timeout_s: float
) -> RabbitRouter:
    async def on_lead_submitted(event: LeadSubmitted, delivery: Delivery) -> None:
        metrics.leads_received.add(1, {"type": event.message_type})
        log.info("lead.submitted_received", {"lead_id": str(event.lead_id), "attempt": delivery.attempt})

    async def on_lead_approved(event: LeadApproved, delivery: Delivery) -> None:
        metrics.leads_received.add(1, {"type": event.message_type})
        log.info("lead.approved_received", {"lead_id": str(event.lead_id), "attempt": delivery.attempt})

    router = RabbitRouter()
    policy = ConsumerPolicy(
        DISTRIBUTION,
        {LeadSubmitted: on_lead_submitted, LeadApproved: on_lead_approved},
        publisher,
        telemetry,
        service="distribution-worker",
        handler_timeout_s=handler_timeout_s,
    )
    subscribe(router, policy)
    return router
