"""What a dead letter says about its failure: reading headers or `x-death`, dedupe keys, fingerprints, masking."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from dlq_service.dead_letters import (
    DeadLetterMessage,
    broker_reason,
    decode_payload,
    fingerprint,
    json_safe,
    mask,
    normalize_message,
    read_dead_letter,
    top_application_frame,
)
from libs.db.tables import DeadLetterReason
from libs.messaging import headers as h

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
FAILED_AT = "2026-11-30T11:59:00+00:00"
STACK = (
    "Traceback (most recent call last):\n"
    '  File "/app/libs/messaging/consumer.py", line 120, in handle\n'
    '  File "/app/services/email-worker/email_worker/mailer.py", line 88, in send\n'
    '  File "/usr/lib/python3.11/smtplib.py", line 900, in sendmail\n'
)


def policy_headers(**overrides: Any) -> dict[str, Any]:
    """What our consumer policy sets on a message it gives up on."""
    return {
        h.REASON: "error", h.ORIGINAL_QUEUE: "email", h.ORIGINAL_EXCHANGE: "fmhl.commands",
        h.ORIGINAL_ROUTING_KEY: "email.send", h.ERROR_TYPE: "SmtpRefused", h.ERROR_MESSAGE: "550 mailbox unavailable",
        h.ERROR_STACK: STACK, h.ATTEMPTS: 4, h.SERVICE: "email-worker", h.FIRST_FAILURE_AT: "2026-11-30T11:58:00+00:00",
        h.LAST_FAILURE_AT: FAILED_AT,
    } | overrides  # fmt: skip


def broker_headers(reason: str = "delivery_limit", **overrides: Any) -> dict[str, Any]:
    """What RabbitMQ 3.10 sets when it dead-letters a message itself."""
    death = {"queue": "distribution", "reason": reason, "count": 1, "exchange": "fmhl.events",
             "routing-keys": [b"lead.approved"], "time": datetime(2026, 11, 30, 11, 0)}  # fmt: skip
    return {"x-death": [death], "x-first-death-queue": "distribution", "x-first-death-reason": reason,
            "x-first-death-exchange": "fmhl.events"} | overrides  # fmt: skip


def read(headers: dict[str, Any], body: bytes = b'{"lead_id": 1}', message_id: str | None = "m-1") -> DeadLetterMessage:
    return read_dead_letter(
        headers, body, message_id=message_id, correlation_id="c-1", message_type="send_email",
        content_type="application/json", now=NOW,
    )  # fmt: skip


def test_our_policy_headers_say_where_and_why_it_failed() -> None:
    letter = read(policy_headers())
    assert (letter.queue, letter.exchange, letter.routing_key) == ("email", "fmhl.commands", "email.send")
    assert letter.reason is DeadLetterReason.error
    assert (letter.error_type, letter.error_message) == ("SmtpRefused", "550 mailbox unavailable")
    assert (letter.attempts, letter.service) == (4, "email-worker")
    assert letter.first_failed_at == datetime(2026, 11, 30, 11, 58, tzinfo=UTC)
    assert letter.last_failed_at == datetime(2026, 11, 30, 11, 59, tzinfo=UTC)
    assert letter.payload == {"lead_id": 1}


def test_a_policy_reason_outside_the_known_ones_is_stored_as_an_error() -> None:
    assert read(policy_headers(**{h.REASON: "gave-up"})).reason is DeadLetterReason.error


def test_a_missing_failure_time_is_the_time_it_arrived() -> None:
    headers = policy_headers()
    del headers[h.LAST_FAILURE_AT], headers[h.FIRST_FAILURE_AT]
    letter = read(headers)
    assert letter.first_failed_at == letter.last_failed_at == NOW


def test_a_broker_dead_letter_is_described_by_its_first_death() -> None:
    letter = read(broker_headers("delivery_limit", **{"x-delivery-count": 2}))
    assert (letter.queue, letter.exchange, letter.routing_key) == ("distribution", "fmhl.events", "lead.approved")
    assert letter.reason is DeadLetterReason.delivery_limit
    assert letter.error_message == "dead-lettered by the broker: delivery_limit"
    assert letter.error_type is None
    assert letter.attempts == 3  # the delivery count counts redeliveries: one more delivery than that
    assert letter.last_failed_at == datetime(2026, 11, 30, 11, 0, tzinfo=UTC)


def test_without_a_delivery_count_the_death_count_is_the_attempts() -> None:
    assert read(broker_headers("rejected")).attempts == 1


def test_a_broker_reason_rabbitmq_did_not_document_is_a_rejection() -> None:
    assert broker_reason("expired") is DeadLetterReason.expired
    assert broker_reason("error") is DeadLetterReason.rejected
    assert broker_reason("something-new") is DeadLetterReason.rejected


def test_the_dlq_entry_header_of_a_retry_names_its_entry() -> None:
    entry = uuid.uuid4()
    assert read(policy_headers(**{h.DLQ_ENTRY: str(entry)})).retried_entry == entry
    assert read(policy_headers(**{h.DLQ_ENTRY: "not-a-uuid"})).retried_entry is None
    assert read(policy_headers()).retried_entry is None


def test_the_same_dead_letter_delivered_twice_has_one_dedupe_key() -> None:
    assert read(policy_headers()).dedupe_key == read(policy_headers()).dedupe_key


def test_the_same_message_failing_again_later_has_a_new_dedupe_key() -> None:
    later = (datetime.fromisoformat(FAILED_AT) + timedelta(minutes=5)).isoformat()
    assert read(policy_headers()).dedupe_key != read(policy_headers(**{h.LAST_FAILURE_AT: later})).dedupe_key


def test_without_a_message_id_the_body_identifies_the_dead_letter() -> None:
    first = read(policy_headers(), body=b"one", message_id=None)
    assert first.dedupe_key == read(policy_headers(), body=b"one", message_id=None).dedupe_key
    assert first.dedupe_key != read(policy_headers(), body=b"two", message_id=None).dedupe_key


def test_ids_numbers_and_quoted_values_do_not_change_a_failures_shape() -> None:
    one = normalize_message(f"lead {uuid.uuid4()} has 3 assignments, provider 'Acme' at 0x7f3a")
    other = normalize_message(f"lead {uuid.uuid4()} has 12 assignments, provider 'Zeta' at 0x1b2c")
    assert one == other
    assert not any(part in one for part in ("3", "12", "Acme", "Zeta", "7f3a"))


def test_the_top_frame_is_the_innermost_one_in_our_code_without_its_line() -> None:
    assert top_application_frame(STACK) == "email_worker/mailer.py:send"
    assert top_application_frame('  File "/usr/lib/python3.11/json/decoder.py", line 3, in decode\n') == ""


def test_one_failure_in_different_messages_shares_a_fingerprint() -> None:
    moved = STACK.replace("line 88", "line 91")
    assert fingerprint("SmtpRefused", "550 <a@x.example> refused", STACK) == fingerprint(
        "SmtpRefused", "550 <b@y.example> refused", moved
    )


def test_another_error_type_or_place_is_another_fingerprint() -> None:
    base = fingerprint("SmtpRefused", "550 refused", STACK)
    assert fingerprint("SmtpTimeout", "550 refused", STACK) != base
    assert fingerprint("SmtpRefused", "550 refused", STACK.replace("in send", "in connect")) != base


def test_a_letter_without_an_error_type_is_fingerprinted_by_its_reason() -> None:
    letter = read(broker_headers("expired"))
    assert letter.fingerprint == fingerprint("expired", "dead-lettered by the broker: expired", "")


def test_a_body_that_is_not_json_has_no_payload() -> None:
    assert decode_payload(b"\xff\xfe not json") is None
    assert decode_payload(b"[" * 100_000) is None


def test_json_that_jsonb_cannot_hold_has_no_payload() -> None:
    assert decode_payload(b'{"name": "a\\u0000b"}') is None
    assert decode_payload(b'{"name": "ab"}') == {"name": "ab"}


def test_header_values_become_json_postgresql_accepts() -> None:
    safe = json_safe({"a\x00": b"bytes\x00", "at": datetime(2026, 1, 1, tzinfo=UTC), "list": (1, 2.5, None)})
    assert safe == {"a\ufffd": "bytes\ufffd", "at": "2026-01-01T00:00:00+00:00", "list": [1, 2.5, None]}
    assert orjson.loads(orjson.dumps(safe)) == safe


def test_contact_details_are_masked_at_any_depth() -> None:
    payload = {"lead": {"contact": {"email": "ada@example.com", "name": "Ada", "phone": "+1 555"}},
               "to": ["bob@example.com"], "zip": "94107"}  # fmt: skip
    assert mask(payload) == {
        "lead": {"contact": {"email": "a***@example.com", "name": "A***", "phone": "+***"}},
        "to": ["b***@example.com"],
        "zip": "94107",
    }


def test_a_new_entry_fits_its_columns() -> None:
    letter = read(policy_headers(**{h.ORIGINAL_QUEUE: "q" * 300}), message_id="m" * 300)
    values = letter.entry_values(uuid.uuid4())
    assert len(values["queue_name"]) == 100
    assert len(values["job_id"]) == 100
    assert len(values["message_id"]) == 200
    assert values["failed_at"] == values["last_failed_at"] == letter.last_failed_at


def test_an_empty_id_is_stored_as_null() -> None:
    values = read(policy_headers(), message_id="").entry_values(uuid.uuid4())
    assert values["message_id"] is None
    assert values["job_id"] is None


def test_json_columns_are_sent_as_json_text_and_no_payload_as_null() -> None:
    assert read(policy_headers()).entry_values(uuid.uuid4())["payload"] == '{"lead_id":1}'
    assert read(policy_headers(), body=b"not json").entry_values(uuid.uuid4())["payload"] is None


def test_the_event_row_carries_the_dedupe_key() -> None:
    letter = read(policy_headers())
    entry = uuid.uuid4()
    event = letter.event_values(entry)
    assert (event["entry_id"], event["dedupe_key"], event["reason"]) == (entry, letter.dedupe_key, "error")
