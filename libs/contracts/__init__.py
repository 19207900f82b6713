"""Message contracts between services: events named as facts, commands as orders; routing key = type."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# \u0000 is refused everywhere: PostgreSQL text and jsonb cannot store it.
SafeText = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]
ZipCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{5}$")]
EmailAddress = Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$")]


class Message(BaseModel):
    """Base of every message: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    message_type: ClassVar[str]
    routed_as: ClassVar[str | None] = None
    """The routing key, when it is not the message type: a command bundling others goes where they go, through
    the same bindings and publish permissions, and its consumer tells it from them by its type."""

    @classmethod
    def routing_key(cls) -> str:
        return cls.routed_as or cls.message_type


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: SafeText
    email: EmailAddress
    phone: Annotated[str, StringConstraints(pattern=r"^\+?[0-9 ()\-]{7,20}$")]


class LeadSubmitted(Message):
    message_type: ClassVar[str] = "lead.submitted"
    lead_id: UUID
    external_id: SafeText
    category: SafeText
    zip: ZipCode


class LeadApproved(Message):
    message_type: ClassVar[str] = "lead.approved"
    lead_id: UUID
    approved_by: SafeText


EmailTemplate = Literal["new_lead", "low_balance", "refund_approved", "export_ready", "subscription_reactivated"]
MAX_MAILS_PER_COMMAND = 100
"""A lead's mails at most: a new-lead and a low-balance mail for each of up to 50 providers."""


class SendEmail(Message):
    message_type: ClassVar[str] = "email.send"
    template: EmailTemplate
    to: EmailAddress
    params: dict[SafeText, str | int] = Field(default_factory=dict, max_length=50)


class Mail(BaseModel):
    """One mail of a `SendEmails`: what a `SendEmail` says, and the job id email-worker sends it once by."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    job_id: Annotated[str, StringConstraints(max_length=200, pattern=r"^[\x21-\x7e]+$")]
    """Printable ASCII without spaces, like the message ids it stands for (it becomes a mail header)."""
    template: EmailTemplate
    to: EmailAddress
    params: dict[SafeText, str | int] = Field(default_factory=dict, max_length=50)


class SendEmails(Message):
    """Several mails in one command (a distributed lead's): one message, one consume and one look-up of what was
    already sent for all of them, instead of one each. Each mail is still sent, recorded and deduplicated on its
    own `job_id`, as a `SendEmail` is on its message id, so a job asked for in either shape is sent once."""

    message_type: ClassVar[str] = "email.send_batch"
    routed_as: ClassVar[str | None] = SendEmail.message_type
    mails: Annotated[list[Mail], Field(min_length=1, max_length=MAX_MAILS_PER_COMMAND)]

    @model_validator(mode="after")
    def _one_mail_per_job(self) -> SendEmails:
        if len({mail.job_id for mail in self.mails}) != len(self.mails):
            raise ValueError("two mails share a job_id")
        return self


class ExportReport(Message):
    message_type: ClassVar[str] = "report.export"
    export_id: UUID


class DeadLetterRetrySucceeded(Message):
    """A message retried from the DLQ was handled: its entry resolves itself, if `signature` is the dlq-service's
    own mark for that retry (copied from the retried message's headers; nobody else can make one)."""

    message_type: ClassVar[str] = "dead_letter.retry_succeeded"
    entry_id: UUID
    retry_id: Annotated[int, Field(strict=True, ge=1, le=2**63 - 1)]
    signature: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    queue: SafeText
    message_id: Annotated[str, StringConstraints(max_length=200)]


class RunScheduledJob(Message):
    """A scheduled job's slot was claimed (fenced): run it, with the consumer policy's retries and DLQ."""

    message_type: ClassVar[str] = "job.run_requested"
    run_id: UUID
    job: SafeText


ALL_MESSAGES: tuple[type[Message], ...] = (
    LeadSubmitted, LeadApproved, SendEmail, SendEmails, ExportReport, DeadLetterRetrySucceeded, RunScheduledJob,
)  # fmt: skip
