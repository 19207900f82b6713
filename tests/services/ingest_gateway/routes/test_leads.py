"""A lead submission's answer: 202 with the body the OpenAPI document promises (LeadAccepted)."""

from __future__ import annotations

import uuid

from asyncpg.pgproto import pgproto

from ingest_gateway.routes.leads import LeadAccepted, accepted
from libs.db.tables import LeadStatus


def test_a_submission_is_answered_202_with_the_documented_body() -> None:
    lead_id = uuid.uuid4()
    answer = accepted(lead_id, LeadStatus.submitted)
    assert answer.status_code == 202
    assert answer.headers["content-type"] == "application/json"
    assert LeadAccepted.model_validate_json(answer.body) == LeadAccepted(lead_id=lead_id, status=LeadStatus.submitted)


def test_a_repeat_whose_id_postgresql_gave_back_is_answered_with_the_same_body() -> None:
    # A repeat's lead is read back from PostgreSQL: asyncpg gives its id as a UUID subclass of its own.
    lead_id = uuid.uuid4()
    answer = accepted(pgproto.UUID(str(lead_id)), LeadStatus.distributed)
    assert answer.status_code == 202
    assert LeadAccepted.model_validate_json(answer.body) == LeadAccepted(lead_id=lead_id, status=LeadStatus.distributed)
