"""The `distribution` queue: one router, one handler per message type.

Each handler distributes the lead (whose one writing statement commits as it ends), then asks for its emails in
one command. A redelivered event finds the lead distributed and asks again for the same emails, which
email-worker sends once.
"""

from faststream.rabbit import RabbitRouter
from sqlalchemy.ext.asyncio import AsyncEngine

from distribution_worker.distribution import Outcome, distribute
from distribution_worker.lead_state import LeadEvent
from distribution_worker.metrics import DistributionMetrics
from libs.contracts import LeadApproved, LeadSubmitted, Mail, SendEmails
from libs.db import autocommitting
from libs.logging import get_logger
from libs.messaging.consumer import ConsumerPolicy, Delivery, subscribe
from libs.messaging.publisher import Publisher
from libs.messaging.topology import DISTRIBUTION
from libs.telemetry import Telemetry

log = get_logger("distribution_worker")


def emails(outcome: Outcome) -> list[Mail]:
    """The mails a distributed lead asks for, each with a job id that email-worker sends once."""
    mails = []
    for assigned in outcome.assigned:
        mails.append(Mail(
            job_id=f"email:new_lead:{assigned.assignment_id}", template="new_lead", to=assigned.provider_email,
            params={"lead_id": str(outcome.lead_id), "price_cents": assigned.price_cents},
        ))  # fmt: skip
        if assigned.low_balance and assigned.balance_after_cents is not None:
            mails.append(Mail(
                job_id=f"email:low_balance:{assigned.assignment_id}", template="low_balance",
                to=assigned.provider_email, params={"balance_cents": assigned.balance_after_cents},
            ))  # fmt: skip
    return mails


def build_router(
    engine: AsyncEngine,
    publisher: Publisher,
    telemetry: Telemetry,
    metrics: DistributionMetrics,
    *,
    max_providers: int,
    handler_timeout_s: float,
) -> RabbitRouter:
    engine = autocommitting(engine)

    async def announce(outcome: Outcome) -> None:
        # One command for all of the lead's mails: one publish and confirm here, one consume and one look-up in
        # email-worker, instead of one of each per mail. The message id names the lead; what email-worker sends
        # once is each mail's own job id, whichever delivery (or shape) asks for it.
        mails = emails(outcome)
        if mails:
            await publisher.publish(SendEmails(mails=mails), message_id=f"emails:{outcome.lead_id}")
        log.info(
            "lead.distributed" if outcome.newly_distributed else "lead.already_handled",
            {"lead_id": str(outcome.lead_id), "status": outcome.status, "assigned": len(outcome.assigned),
             "skipped_insufficient_balance": len(outcome.skipped_providers)},
        )  # fmt: skip

    async def on_lead_submitted(event: LeadSubmitted, delivery: Delivery) -> None:
        outcome = await distribute(
            engine, event.lead_id, message_id=delivery.message_id, event=LeadEvent.submitted,
            max_providers=max_providers, metrics=metrics,
        )  # fmt: skip
        await announce(outcome)

    async def on_lead_approved(event: LeadApproved, delivery: Delivery) -> None:
        outcome = await distribute(
            engine, event.lead_id, message_id=delivery.message_id, event=LeadEvent.approved,
            max_providers=max_providers, metrics=metrics,
        )  # fmt: skip
        await announce(outcome)

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
