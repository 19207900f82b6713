"""What capture tells about its letters: a batch's one log line with each letter's entry and identifiers, and the
trace each letter arrived in (which the batch's span links to)."""

from __future__ import annotations

import logging
import uuid

from dlq_service.capture import Captured, CaptureOutcome
from dlq_service.subscribers import arrived_in, received_line
from libs.logging import log_record_fields
from tests.services.dlq_service.test_capture_batches import letter


def test_the_batch_line_names_each_letters_entry_and_correlation_id_and_masks_contact_data() -> None:
    entry = uuid.uuid4()
    line = received_line([
        (letter("email", "m-1", correlation_id="request-7"), Captured(entry, CaptureOutcome.new)),
        (letter("email", "m-2", correlation_id="ada@example.com"), Captured(None, CaptureOutcome.duplicate)),
    ])  # fmt: skip
    assert line["letters"] == 2
    assert line["entries"][0] == {
        "entry_id": str(entry), "outcome": "new", "queue": "email", "reason": "error", "error_type": "SmtpRefused",
        "message_id": "m-1", "correlation_id": "request-7",
    }  # fmt: skip
    logged = log_record_fields(logging.makeLogRecord({"msg": "dead_letters.received", "metadata": line}), "x")
    assert "ada@example.com" not in str(logged["metadata"])
    assert logged["metadata"]["entries"][0]["correlation_id"] == "request-7"


def test_a_letters_trace_is_read_from_its_traceparent_and_a_malformed_one_is_none() -> None:
    origin = arrived_in({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    assert origin is not None
    assert origin.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert arrived_in({"traceparent": "00-nope-01"}) is None
    assert arrived_in({"traceparent": b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}) is None
    assert arrived_in(None) is None
