"""A lead submission's answer: 202 with the body the OpenAPI document promises (LeadAccepted)."""

from __future__ import annotations

import uuid

from ingest_gateway.routes.leads import LeadAccepted, accepted
from libs.db.tables import LeadStatus


def test_a_submission_is_answered_202_with_the_documented_body() -> None:
    lead_id = uuid.uuid4()
    answer = accepted(lead_id, LeadStatus.submitted)
    assert answer.status_code == 202
    assert answer.headers["content-type"] == "application/json"
    assert LeadAccepted.model_validate_json(answer.body) == LeadAccepted(lead_id=lead_id, status=LeadStatus.submitted)
