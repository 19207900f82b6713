"""What a dead letter says about its failure: reading headers or `x-death`, dedupe keys, fingerprints, masking,
and that whatever a header or property holds, what is read fits its column."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from dlq_service.dead_letters import (
    CUT,
    MAX_JSON_DEPTH,
    ORIGINAL_PROPERTIES,
    DeadLetterMessage,
    RetryLink,
    broker_reason,
    decode_payload,
    fingerprint,
    json_safe,
    mask,
    mask_contacts,
    normalize_message,
    preview,
    read_dead_letter,
    top_application_frame,
)
from libs.db.tables import DeadLetterReason
from libs.logging.pii import mask_pii
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


def test_a_retried_message_names_its_entry_retry_and_signature() -> None:
    entry = uuid.uuid4()
    link = {h.DLQ_ENTRY: str(entry), h.DLQ_RETRY: 7, h.DLQ_SIGNATURE: "ab" * 32}
    assert read(policy_headers(**link)).retry_link == RetryLink(entry, 7, "ab" * 32)


@pytest.mark.parametrize(
    "link",
    [{}, {h.DLQ_ENTRY: "not-a-uuid", h.DLQ_RETRY: 1, h.DLQ_SIGNATURE: "s"},
     {h.DLQ_ENTRY: str(uuid.uuid4()), h.DLQ_SIGNATURE: "s"},
     {h.DLQ_ENTRY: str(uuid.uuid4()), h.DLQ_RETRY: True, h.DLQ_SIGNATURE: "s"},
     {h.DLQ_ENTRY: str(uuid.uuid4()), h.DLQ_RETRY: 2**40, h.DLQ_SIGNATURE: "s"},
     {h.DLQ_ENTRY: str(uuid.uuid4()), h.DLQ_RETRY: 1}],
    ids=["none", "bad-entry", "no-retry", "boolean-retry", "retry-out-of-range", "no-signature"],
)  # fmt: skip
def test_an_incomplete_or_malformed_retry_link_is_no_link(link: dict[str, Any]) -> None:
    assert read(policy_headers(**link)).retry_link is None


def test_the_same_dead_letter_delivered_twice_has_one_dedupe_key() -> None:
    assert read(policy_headers()).dedupe_key == read(policy_headers()).dedupe_key


def test_the_same_message_failing_again_later_has_a_new_dedupe_key() -> None:
    later = (datetime.fromisoformat(FAILED_AT) + timedelta(minutes=5)).isoformat()
    assert read(policy_headers()).dedupe_key != read(policy_headers(**{h.LAST_FAILURE_AT: later})).dedupe_key


def test_a_redelivery_whose_failure_time_could_not_be_stored_keeps_its_dedupe_key() -> None:
    # The coerced time is the time it arrived, which differs between deliveries; the key must not.
    def unreadable(now: datetime) -> DeadLetterMessage:
        return read_dead_letter(
            policy_headers(**{h.LAST_FAILURE_AT: "9999-12-31T23:59:59-14:00"}), b"{}", message_id="m-1",
            correlation_id=None, message_type=None, content_type=None, now=now,
        )  # fmt: skip

    assert unreadable(NOW).dedupe_key == unreadable(NOW + timedelta(seconds=5)).dedupe_key


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


def test_json_nested_deeper_than_the_encoder_goes_has_no_payload() -> None:
    assert decode_payload(b"[" * 300 + b"]" * 300) is None


def test_json_that_jsonb_cannot_hold_has_no_payload() -> None:
    assert decode_payload(b'{"name": "a\\u0000b"}') is None
    assert decode_payload(b'{"name": "ab"}') == {"name": "ab"}


def test_header_values_become_json_postgresql_accepts() -> None:
    safe = json_safe({"a\x00": b"bytes\x00", "at": datetime(2026, 1, 1, tzinfo=UTC), "list": (1, 2.5, None)})
    assert safe == {"a\\x00": "bytes\\x00", "at": "2026-01-01T00:00:00+00:00", "list": [1, 2.5, None]}
    assert orjson.loads(orjson.dumps(safe)) == safe


def test_invalid_utf8_in_header_keys_and_values_is_escaped_not_lost() -> None:
    # What the tolerant AMQP decoder hands over: surrogate escapes for the invalid bytes.
    raw_key = b"k\xffy".decode("utf-8", "surrogateescape")
    assert json_safe({raw_key: b"v\xfe", "text": "t\udcff"}) == {"k\\xffy": "v\\xfe", "text": "t\\xff"}


def test_header_values_nested_past_the_limit_are_stored_as_a_marker() -> None:
    nested: dict[str, Any] = {}
    deepest = nested
    for _ in range(MAX_JSON_DEPTH + 10):
        deepest["n"] = {}
        deepest = deepest["n"]
    encoded = orjson.dumps(json_safe(nested))
    assert b"nested deeper than" in encoded


def test_integers_json_cannot_hold_and_decimals_are_stored_as_text() -> None:
    assert json_safe({"big": 2**70, "money": Decimal("1.10"), "ok": 2**40}) == {
        "big": str(2**70), "money": "1.10", "ok": 2**40,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("value", "stored"),
    [(4, 4), (2**31, None), (-(2**31) - 1, None), (True, None), ("4", None), (4.0, None), ([4], None)],
    ids=["int", "past-int32", "below-int32", "boolean", "text", "float", "list"],
)
def test_attempts_are_stored_only_when_they_are_an_integer_the_column_holds(value: Any, stored: int | None) -> None:
    assert read(policy_headers(**{h.ATTEMPTS: value})).attempts == stored


@pytest.mark.parametrize(
    "value",
    ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "not a time", 12, {"at": 1}, b"\xff"],
    ids=["past-max-in-utc", "before-min-in-utc", "text", "number", "table", "bytes"],
)
def test_a_failure_time_that_cannot_be_stored_is_the_time_it_arrived(value: Any) -> None:
    letter = read(policy_headers(**{h.LAST_FAILURE_AT: value, h.FIRST_FAILURE_AT: value}))
    assert letter.last_failed_at == letter.first_failed_at == NOW


def test_text_headers_of_any_type_become_text() -> None:
    letter = read(
        policy_headers(**{h.ERROR_TYPE: 42, h.ERROR_MESSAGE: {"nested": [1]}, h.ORIGINAL_QUEUE: b"em\x00ail"})
    )
    assert letter.error_type == "42"
    assert letter.error_message == "{'nested': [1]}"
    assert letter.queue == "em\\x00ail"


def test_nul_and_invalid_utf8_in_properties_are_escaped() -> None:
    letter = read_dead_letter(
        policy_headers(), b"{}", message_id="id\x00" + b"\xff".decode("utf-8", "surrogateescape"),
        correlation_id="c\x00", message_type="t\udcfe", content_type=None, now=NOW,
    )  # fmt: skip
    assert (letter.message_id, letter.correlation_id, letter.message_type) == ("id\\x00\\xff", "c\\x00", "t\\xfe")
    assert letter.dedupe_key  # an escaped id still makes a key


def test_a_property_too_long_for_its_column_is_cut_with_a_marker_and_kept_whole_in_the_headers() -> None:
    letter = read(policy_headers(), message_id="m" * 250)
    assert letter.message_id is not None
    assert len(letter.message_id) == 200
    assert letter.message_id.endswith(CUT)
    assert letter.headers[ORIGINAL_PROPERTIES] == {"message_id": "m" * 250}


def test_headers_that_are_not_a_table_and_deaths_that_are_not_a_list_read_as_a_broker_rejection() -> None:
    for death in ({"queue": "email"}, "email", [1, 2], []):
        letter = read({"x-death": death, "x-first-death-reason": 7})
        assert letter.reason is DeadLetterReason.rejected
        assert letter.queue == "unknown"


def test_every_column_of_a_hostile_letter_fits() -> None:
    letter = read_dead_letter(
        {h.REASON: b"\xff" * 40, h.ORIGINAL_QUEUE: "q" * 500, h.ORIGINAL_EXCHANGE: "e" * 500,
         h.ORIGINAL_ROUTING_KEY: "r" * 500, h.ERROR_TYPE: "T" * 500, h.SERVICE: "s" * 500, h.ATTEMPTS: 2**62},
        b"\x00\xff", message_id="i" * 300, correlation_id="c" * 300, message_type="t" * 300,
        content_type="x" * 300, now=NOW,
    )  # fmt: skip
    values = letter.entry_values(uuid.uuid4())
    limits = {"queue_name": 100, "job_id": 100, "original_exchange": 255, "original_routing_key": 255,
              "message_id": 200, "correlation_id": 128, "error_type": 200, "service": 100, "message_type": 100,
              "content_type": 100}  # fmt: skip
    for column, limit in limits.items():
        assert len(values[column]) <= limit, column
    assert values["attempts"] is None
    assert letter.reason is DeadLetterReason.error
    assert values["raw_body"] == b"\x00\xff"
    assert values["payload"] is None


def test_contact_details_are_masked_at_any_depth() -> None:
    payload = {"lead": {"contact": {"email": "ada@example.com", "name": "Ada", "phone": "+1 555"}},
               "to": ["bob@example.com"], "zip": "94107"}  # fmt: skip
    assert mask(payload) == {
        "lead": {"contact": {"email": "a***@e***.com", "name": "A***", "phone": "+***"}},
        "to": ["b***@e***.com"],
        "zip": "94107",
    }


def test_an_address_or_phone_number_is_masked_under_any_key_and_inside_text() -> None:
    masked = mask({"note": "call +1 (415) 555-0100 or write to bob@corp.example.org", "zip": "94107"})
    assert masked == {"note": "call ***00 or write to b***@c***.org", "zip": "94107"}


@pytest.mark.parametrize(
    "text",
    [
        "ada@example.com", "a@b", "@", "mail-to:bob@corp.example", "+1 415 555 0100", "(415) 555-0100", "4155550100",
        "555-0100", "1.2.3.4.5.6.7", "1 2 3 4 5 6 7", "12345 6", "2026-11-30T12:00:00", "10.0.0.1", "3.14159265",
        "order 1234567", "lead.approved:42485e3a-0a5d-4f34-abaa-9455e3e70682", "e3b0c44298fc1c149afbf4c8996fb924",
        "boom 42", "", "x" * 500 + "1234567",
    ],
)  # fmt: skip
def test_masking_skips_no_text_mask_pii_would_change(text: str) -> None:
    assert mask_contacts(text) == mask_pii(text)


def test_a_preview_is_bounded_masked_and_says_when_there_is_more() -> None:
    text = orjson.dumps({"contact": {"name": "Ada Lovelace", "email": "ada@example.com"}, "pad": "x" * 1000}).decode()
    shown = preview(text, fetched_whole=True, length=80)
    assert shown is not None
    assert len(shown) == 80
    assert shown.endswith(CUT)
    assert "ada@example.com" not in shown
    assert "Lovelace" not in shown


def test_a_preview_of_a_prefix_never_shows_part_of_an_address_cut_at_its_end() -> None:
    text = '{"note": "x", "email": "ada.lovelace@exam'
    shown = preview(text, fetched_whole=False, length=300)
    assert shown is not None
    assert "ada" not in shown
    assert shown.endswith(CUT)


def test_a_new_entry_fits_its_columns() -> None:
    letter = read(policy_headers(**{h.ORIGINAL_QUEUE: "q" * 300}), message_id="m" * 300)
    values = letter.entry_values(uuid.uuid4())
    assert len(values["queue_name"]) == 100
    assert len(values["job_id"]) == 100
    assert len(values["message_id"]) == 200
    assert values["failed_at"] == values["last_failed_at"] == letter.last_failed_at


def test_a_stripped_letter_keeps_its_body_and_dedupe_key_and_says_why_its_headers_are_missing() -> None:
    letter = read(policy_headers())
    stripped = letter.stripped("refused by PostgreSQL: DataError")
    assert (stripped.raw_body, stripped.dedupe_key) == (letter.raw_body, letter.dedupe_key)
    assert (stripped.payload, stripped.stack_trace) == (None, None)
    assert stripped.headers == {"fmhl-dlq-headers-not-stored": "refused by PostgreSQL: DataError"}


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
