"""`SendEmails`, a command carrying several mails: routed where `SendEmail` goes, told from it by its type, and
refused when its mails could not each be sent once by their job ids."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from libs.contracts import ALL_MESSAGES, MAX_MAILS_PER_COMMAND, Mail, SendEmail, SendEmails


def mail(job_id: str = "email:new_lead:1") -> Mail:
    return Mail(job_id=job_id, template="new_lead", to="p@example.com", params={"lead_id": "l", "price_cents": 100})


def test_a_command_of_mails_is_routed_as_a_single_mail_and_typed_on_its_own() -> None:
    assert SendEmails.routing_key() == SendEmail.routing_key() == SendEmail.message_type
    assert SendEmails.message_type != SendEmail.message_type


def test_every_contract_has_its_own_type() -> None:
    types = [contract.message_type for contract in ALL_MESSAGES]
    assert len(types) == len(set(types))


def test_two_mails_with_one_job_id_are_refused() -> None:
    with pytest.raises(ValidationError, match="share a job_id"):
        SendEmails(mails=[mail("email:new_lead:1"), mail("email:new_lead:1")])


@pytest.mark.parametrize("job_id", ["", "email:new lead:1", "email:new_lead:1\r\nBcc: x@example.com", "é" * 3])
def test_a_job_id_that_is_not_printable_ascii_without_spaces_is_refused(job_id: str) -> None:
    with pytest.raises(ValidationError):
        mail(job_id)


def test_a_command_holds_at_least_one_mail_and_at_most_a_leads_worth() -> None:
    with pytest.raises(ValidationError):
        SendEmails(mails=[])
    with pytest.raises(ValidationError):
        SendEmails(mails=[mail(f"email:new_lead:{n}") for n in range(MAX_MAILS_PER_COMMAND + 1)])
    assert len(SendEmails(mails=[mail(f"email:new_lead:{n}") for n in range(MAX_MAILS_PER_COMMAND)]).mails) == 100


def test_a_command_reads_back_as_it_was_sent() -> None:
    command = SendEmails(mails=[mail("email:new_lead:1"), mail("email:low_balance:1")])
    assert SendEmails.model_validate_json(command.model_dump_json()) == command
