"""What a delivery of lead.submitted or lead.approved does, for every status a lead can have."""

import pytest

from distribution_worker.lead_state import LeadEvent, Step, next_step
from libs.db.tables import LeadStatus


@pytest.mark.parametrize("status", [LeadStatus.distributed, LeadStatus.unassigned])
@pytest.mark.parametrize("event", list(LeadEvent))
@pytest.mark.parametrize("trusted", [True, False])
def test_a_lead_already_handled_is_reported_not_distributed_again(
    status: LeadStatus, event: LeadEvent, trusted: bool
) -> None:
    assert next_step(status, trusted=trusted, event=event) is Step.report_existing


@pytest.mark.parametrize("event", list(LeadEvent))
@pytest.mark.parametrize("trusted", [True, False])
def test_a_rejected_lead_is_refused(event: LeadEvent, trusted: bool) -> None:
    assert next_step(LeadStatus.rejected, trusted=trusted, event=event) is Step.refuse


def test_a_trusted_sources_submission_is_approved_then_distributed() -> None:
    assert next_step(LeadStatus.submitted, trusted=True, event=LeadEvent.submitted) is Step.approve_and_distribute


def test_an_untrusted_sources_submission_waits_for_an_admin() -> None:
    assert next_step(LeadStatus.submitted, trusted=False, event=LeadEvent.submitted) is Step.ignore


@pytest.mark.parametrize("trusted", [True, False])
def test_a_submission_event_for_an_approved_lead_leaves_it_to_the_approval_event(trusted: bool) -> None:
    assert next_step(LeadStatus.approved, trusted=trusted, event=LeadEvent.submitted) is Step.ignore


@pytest.mark.parametrize("trusted", [True, False])
def test_an_approval_seen_before_its_commit_is_retried_later(trusted: bool) -> None:
    assert next_step(LeadStatus.submitted, trusted=trusted, event=LeadEvent.approved) is Step.retry_later


@pytest.mark.parametrize("trusted", [True, False])
def test_an_approved_lead_is_distributed_on_its_approval_event(trusted: bool) -> None:
    assert next_step(LeadStatus.approved, trusted=trusted, event=LeadEvent.approved) is Step.distribute


def test_each_step_follows_from_some_status_and_event() -> None:
    steps = {next_step(status, trusted=trusted, event=event)
             for status in LeadStatus for event in LeadEvent for trusted in (True, False)}  # fmt: skip
    assert steps == set(Step)
