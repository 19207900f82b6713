"""What a delivery of a lead event does, given the lead's status and source: pure rules, no I/O."""

from __future__ import annotations

import enum

from libs.db.tables import LeadStatus


class LeadEvent(enum.Enum):
    """The event that brought the lead to the worker."""

    submitted = "lead.submitted"
    approved = "lead.approved"


class Step(enum.Enum):
    report_existing = "report_existing"
    """Already distributed (or found no taker): answer with its assignments, change nothing."""
    refuse = "refuse"
    """Rejected by an admin: distributing it would break a business rule."""
    ignore = "ignore"
    """A submission an admin has to approve (or already decided): the approval event will come."""
    approve_and_distribute = "approve_and_distribute"
    """A trusted source's submission: approved automatically, then distributed."""
    retry_later = "retry_later"
    """Approved, but the approval is not committed yet (the gateway publishes before it commits)."""
    distribute = "distribute"


def next_step(status: LeadStatus, *, trusted: bool, event: LeadEvent) -> Step:
    match status, event:
        case LeadStatus.distributed | LeadStatus.unassigned, _:
            return Step.report_existing
        case LeadStatus.rejected, _:
            return Step.refuse
        case LeadStatus.submitted, LeadEvent.submitted:
            return Step.approve_and_distribute if trusted else Step.ignore
        case _, LeadEvent.submitted:
            return Step.ignore
        case LeadStatus.submitted, LeadEvent.approved:
            return Step.retry_later
    return Step.distribute
