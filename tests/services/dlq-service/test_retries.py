"""Retrying a dead letter: the headers it goes back with, where it goes, and what a bulk retry may ask."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from dlq_service.retries import BulkRetry, next_send_at, redrive_rate, retry_destination, retry_headers
from libs.messaging import headers as h


def test_a_retried_message_keeps_its_own_headers_and_names_its_entry() -> None:
    entry = uuid.uuid4()
    stored = {"traceparent": "00-abc-def-01", h.CORRELATION_ID: "c-1", "tenant": "acme"}
    assert retry_headers(stored, entry) == stored | {h.DLQ_ENTRY: str(entry)}


def test_a_retried_message_starts_over_as_a_first_delivery() -> None:
    failure = {h.ATTEMPT: 3, h.REASON: "error", h.ERROR_TYPE: "SmtpRefused", h.ERROR_CLASS: "permanent",
               h.ERROR_MESSAGE: "550", h.ERROR_STACK: "Traceback", h.ATTEMPTS: 4, h.SERVICE: "email-worker",
               h.FIRST_FAILURE_AT: "t1", h.LAST_FAILURE_AT: "t2"}  # fmt: skip
    assert retry_headers(failure | {"tenant": "acme"}, uuid.uuid4()).keys() == {"tenant", h.DLQ_ENTRY}


def test_broker_headers_are_not_sent_back() -> None:
    stored = {"x-death": [{"count": 1}], "x-first-death-queue": "email", "x-delivery-count": 2}
    assert retry_headers(stored, uuid.uuid4()).keys() == {h.DLQ_ENTRY}


def test_a_second_retry_names_the_entry_being_retried_not_an_older_one() -> None:
    entry = uuid.uuid4()
    assert retry_headers({h.DLQ_ENTRY: str(uuid.uuid4())}, entry) == {h.DLQ_ENTRY: str(entry)}


def test_a_retry_goes_to_the_original_exchange_and_routing_key() -> None:
    assert retry_destination("fmhl.events", "lead.approved", "distribution") == ("fmhl.events", "lead.approved")


def test_a_message_that_came_straight_from_a_queue_goes_back_to_it_by_name() -> None:
    assert retry_destination(None, None, "parked") == ("", "parked")
    assert retry_destination("", "", "parked") == ("", "parked")


def test_a_bulk_retry_runs_at_the_asked_rate_within_the_ceiling() -> None:
    assert redrive_rate(None, default=10, maximum=200) == 10
    assert redrive_rate(50, default=10, maximum=200) == 50
    assert redrive_rate(5_000, default=10, maximum=200) == 200


def test_sends_are_evenly_spaced_and_a_late_one_does_not_make_the_next_hurry() -> None:
    assert next_send_at(10.0, 0.02, now=10.005) == pytest.approx(10.02)
    assert next_send_at(10.0, 0.02, now=11.0) == 11.0


@pytest.mark.parametrize(
    "selection",
    [{}, {"ids": [str(uuid.uuid4())], "group": {"queue": "email", "fingerprint": "f"}},
     {"ids": [], "filter": {"queue": "email"}}],
    ids=["none", "ids-and-group", "ids-and-filter"],
)  # fmt: skip
def test_a_bulk_retry_selects_by_exactly_one_of_ids_group_or_filter(selection: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="exactly one of ids, group or filter"):
        BulkRetry.model_validate(selection)


def test_a_bulk_retry_refuses_fields_it_does_not_know() -> None:
    with pytest.raises(ValidationError):
        BulkRetry.model_validate({"filter": {"queue": "email", "status": "resolved"}})


def test_the_kept_selection_is_what_was_asked_without_run_options() -> None:
    request = BulkRetry.model_validate(
        {"group": {"queue": "email", "fingerprint": "f"}, "dry_run": True, "rate_per_second": 5}
    )
    assert request.selection() == {"group": {"queue": "email", "fingerprint": "f"}}
