"""`/api/v1` routes: translate HTTP into messages; the broker's confirm decides the answer.

The foundation stage accepts a lead and publishes `lead.submitted`; lead sources' API keys,
persistence and idempotency build on this route.
"""

import uuid
from typing import Annotated

from litestar import Controller, post
from litestar.exceptions import HTTPException
from litestar.params import JSONBody
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE
from pydantic import BaseModel, ConfigDict

from ingest_gateway.metrics import GatewayMetrics
from libs.contracts import Contact, LeadSubmitted, SafeText, ZipCode
from libs.logging import get_logger
from libs.messaging.publisher import Publisher, PublishFailed

log = get_logger("ingest_gateway")


class LeadSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: SafeText
    category: SafeText
    zip: ZipCode
    contact: Contact


class LeadAccepted(BaseModel):
    lead_id: uuid.UUID
    message_id: str
    status: str = "submitted"


def leads_controller(publisher: Publisher, metrics: GatewayMetrics, max_body_bytes: int) -> type[Controller]:
    class LeadsController(Controller):
        path = "/api/v1/leads"
        tags = ["leads"]  # noqa: RUF012 - Litestar reads it as a class attribute

        @post(
            "/",
            status_code=HTTP_202_ACCEPTED,
            request_max_body_size=max_body_bytes,
            raises=[HTTPException],
            summary="Submit a lead; 202 once the broker confirmed the lead.submitted event.",
        )
        async def submit_lead(self, data: JSONBody[LeadSubmission]) -> Annotated[LeadAccepted, "accepted"]:
            event = LeadSubmitted(
                lead_id=uuid.uuid4(), external_id=data.external_id, category=data.category, zip=data.zip
            )
            try:
                message_id = await publisher.publish(event)
            except PublishFailed as error:
                log.error("lead.publish_failed", error, {"external_id": data.external_id})
                raise HTTPException(
                    status_code=HTTP_503_SERVICE_UNAVAILABLE,
                    detail="the message broker did not confirm the lead; nothing was accepted, retry later",
                    headers={"Retry-After": "5"},
                ) from None
            metrics.leads_submitted.add(1)
            log.info("lead.submitted", {"lead_id": str(event.lead_id), "message_id": message_id})
            return LeadAccepted(lead_id=event.lead_id, message_id=message_id)

    return LeadsController
