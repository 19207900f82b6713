"""Retrying a dead letter: the headers it goes back with, where it goes, and what a bulk retry may ask."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from dlq_service.retries import (
    BulkRetry,
    NotInTopology,
    next_send_at,
    redrive_rate,
    retry_destination,
    retry_headers,
)
from libs.messaging import headers as h
from libs.messaging.topology import TOPOLOGY

SIGNATURE = "ab" * 32


def test_a_retried_message_keeps_its_own_headers_and_carries_its_signed_retry() -> None:
    entry = uuid.uuid4()
    stored = {"traceparent": "00-abc-def-01", h.CORRELATION_ID: "c-1", "tenant": "acme"}
    assert retry_headers(stored, entry, 3, SIGNATURE) == stored | {
        h.DLQ_ENTRY: str(entry), h.DLQ_RETRY: 3, h.DLQ_SIGNATURE: SIGNATURE,
    }  # fmt: skip


def test_a_retried_message_starts_over_as_a_first_delivery() -> None:
    failure = {h.ATTEMPT: 3, h.REASON: "error", h.ERROR_TYPE: "SmtpRefused", h.ERROR_CLASS: "permanent",
               h.ERROR_MESSAGE: "550", h.ERROR_STACK: "Traceback", h.ATTEMPTS: 4, h.SERVICE: "email-worker",
               h.FIRST_FAILURE_AT: "t1", h.LAST_FAILURE_AT: "t2", h.ORIGINAL_EXCHANGE: "evil",
               h.ORIGINAL_QUEUE: "email", h.ORIGINAL_ROUTING_KEY: "evil.key", "fmhl-error-anything": "x",
               h.PARKED_ERROR: "e", "fmhl-dlq-original-properties": {}}  # fmt: skip
    assert retry_headers(failure | {"tenant": "acme"}, uuid.uuid4(), 1, SIGNATURE).keys() == {
        "tenant", h.DLQ_ENTRY, h.DLQ_RETRY, h.DLQ_SIGNATURE,
    }  # fmt: skip


def test_broker_headers_are_not_sent_back() -> None:
    stored = {"x-death": [{"count": 1}], "x-first-death-queue": "email", "x-delivery-count": 2}
    assert retry_headers(stored, uuid.uuid4(), 1, SIGNATURE).keys() == {h.DLQ_ENTRY, h.DLQ_RETRY, h.DLQ_SIGNATURE}


def test_a_second_retry_names_the_entry_and_retry_being_sent_not_older_ones() -> None:
    entry = uuid.uuid4()
    older = {h.DLQ_ENTRY: str(uuid.uuid4()), h.DLQ_RETRY: 1, h.DLQ_SIGNATURE: "cd" * 32}
    assert retry_headers(older, entry, 2, SIGNATURE) == {h.DLQ_ENTRY: str(entry), h.DLQ_RETRY: 2,
                                                        h.DLQ_SIGNATURE: SIGNATURE}  # fmt: skip


@pytest.mark.parametrize("queue", [queue.name for queue in TOPOLOGY.work_queues])
def test_a_retry_goes_straight_back_to_the_queue_it_failed_in(queue: str) -> None:
    assert retry_destination(queue) == ("", queue)


@pytest.mark.parametrize("queue", ["parked", "dlq", "dlq.parking", "email.retry.1", "amq.direct", ""])
def test_a_queue_outside_the_topology_is_never_a_retry_destination(queue: str) -> None:
    with pytest.raises(NotInTopology, match="inspected and resolved, not retried"):
        retry_destination(queue)


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


@pytest.mark.parametrize(
    "body",
    [{"ids": [], "rate_per_second": True}, {"ids": [], "rate_per_second": "5"}, {"ids": [], "dry_run": 1},
     {"ids": [], "dry_run": "true"}, {"filter": {"queue": "em\x00ail"}},
     {"filter": {"failed_to": "9999-12-31T23:59:59-14:00"}}, {"group": {"queue": "email", "fingerprint": "f\x00"}},
     {"ids": ["not-a-uuid"]}],
    ids=["boolean-rate", "text-rate", "number-dry-run", "text-dry-run", "nul-queue", "time-past-utc-range",
         "nul-fingerprint", "bad-uuid"],
)  # fmt: skip
def test_a_bulk_retry_refuses_values_of_the_wrong_type_or_that_postgresql_could_not_take(
    body: dict[str, object],
) -> None:
    with pytest.raises(ValidationError):
        BulkRetry.model_validate(body)
