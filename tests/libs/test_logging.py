"""Log lines are one JSON object each, with the plan's fields and the bound correlation id."""

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider

from libs.logging import (
    ConsoleFormatter,
    JsonFormatter,
    Logger,
    configure_logging,
    correlation_scope,
    log_record_fields,
    mask_pii,
    mask_pii_in,
)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("test-service"))
    root = logging.getLogger()
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous_level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_carries_the_plan_fields(captured: io.StringIO) -> None:
    Logger("t").info("assignment_created", {"lead_id": "L1"})
    [line] = lines(captured)
    assert line["level"] == "info"
    assert line["event"] == "assignment_created"
    assert line["service"] == "test-service"
    assert line["metadata"] == {"lead_id": "L1"}
    assert str(line["timestamp"]).endswith("+00:00")
    assert {"correlation_id", "trace_id", "span_id"} <= line.keys()


def test_correlation_scope_binds_every_line_inside_it(captured: io.StringIO) -> None:
    with correlation_scope("cid-42"):
        Logger("t").warn("inside")
    Logger("t").info("outside")
    inside, outside = lines(captured)
    assert inside["correlation_id"] == "cid-42"
    assert inside["level"] == "warn"
    assert outside["correlation_id"] is None


def test_with_correlation_returns_a_bound_logger(captured: io.StringIO) -> None:
    Logger("t").with_correlation("cid-7").info("bound")
    assert lines(captured)[0]["correlation_id"] == "cid-7"


def test_error_carries_type_message_and_stack(captured: io.StringIO) -> None:
    try:
        raise ValueError("price must be positive")
    except ValueError as error:
        Logger("t").error("charge_failed", error, {"provider_id": "P"})
    [line] = lines(captured)
    error_fields = line["error"]
    assert isinstance(error_fields, dict)
    assert error_fields["type"] == "ValueError"
    assert error_fields["message"] == "price must be positive"
    assert "Traceback" in error_fields["stack"]
    assert line["metadata"] == {"provider_id": "P"}


def test_log_level_is_honoured(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("svc", "WARNING", "json")
        Logger("t").info("hidden")
        Logger("t").warn("shown")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    output = capsys.readouterr().out.splitlines()
    assert [orjson.loads(line)["event"] for line in output] == ["shown"]


def test_console_format_is_for_humans() -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "lead.submitted", None, None)
    record.metadata = {"lead_id": "L1"}
    with correlation_scope("cid-1"):
        text = ConsoleFormatter("svc").format(record)
    assert "info" in text
    assert "lead.submitted" in text
    assert "cid=cid-1" in text
    assert not text.startswith("{")


def test_an_smtp_refusal_never_logs_the_recipient_it_names(captured: io.StringIO) -> None:
    refusal = "550 5.1.1 <bob.smith@refused.example>: mailbox unavailable"
    try:
        raise RuntimeError(refusal)
    except RuntimeError as error:
        Logger("t").error(
            f"email.refused {refusal}", error, {"smtp_reply": refusal, "to": ["bob.smith@refused.example"]}
        )
    text = captured.getvalue()
    assert "bob.smith@refused.example" not in text
    [line] = lines(captured)
    assert line["metadata"] == {"smtp_reply": "550 5.1.1 <b***@r***.example>: mailbox unavailable",
                                "to": ["b***@r***.example"]}  # fmt: skip
    error_fields = line["error"]
    assert isinstance(error_fields, dict)
    assert error_fields["message"] == "550 5.1.1 <b***@r***.example>: mailbox unavailable"


def test_phone_numbers_are_masked_at_any_depth_of_the_metadata(captured: io.StringIO) -> None:
    Logger("t").info(
        "lead.received", {"payload": {"contact": {"phone": "+1 415 555 0100"}, "notes": ["(415) 555-0199"]}}
    )
    [line] = lines(captured)
    assert line["metadata"] == {"payload": {"contact": {"phone": "***00"}, "notes": ["***99"]}}


def test_values_without_a_json_type_are_masked_as_their_text(captured: io.StringIO) -> None:
    class Recipient:
        def __str__(self) -> str:
            return "ada@example.com"

    Logger("t").info("mail", {"to": Recipient()})
    assert lines(captured)[0]["metadata"] == {"to": "a***@e***.com"}


def test_the_correlation_id_is_never_masked(captured: io.StringIO) -> None:
    with correlation_scope("4155550100"):
        Logger("t").info("call 4155550100")
    [line] = lines(captured)
    assert line["correlation_id"] == "4155550100"
    assert line["event"] == "call ***00"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("<bob.smith@refused.example>", "<b***@r***.example>"),
        ("ada@example.com, bo@x.co.uk", "a***@e***.com, b***@x***.uk"),
        ("call +1 415 5550100 now", "call ***00 now"),
        ("(415) 555-0100", "***00"),
        ("415.555.0100", "***00"),
        ("4155550100", "***00"),
        ("tel:+14155550100", "tel:***00"),
        ("+44 20 7946 0958", "***58"),
    ],
)
def test_contact_data_is_masked_wherever_it_stands_in_a_text(text: str, masked: str) -> None:
    assert mask_pii(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "lead.submitted:12345678-1234-1234-1234-123456789012",
        "at 2026-11-30T03:23:05.354+00:00",
        "from 192.168.100.200",
        "took 12345.678 ms",
        "processed 1500000 rows",
        'File "consumer.py", line 123, in handle',
    ],
    ids=["uuid", "timestamp", "ipv4", "decimal", "count", "stack-frame"],
)
def test_identifiers_times_and_counts_stay_readable(text: str) -> None:
    assert mask_pii(text) == text


def test_masking_a_json_value_keeps_its_shape_and_other_types() -> None:
    payload = {"to": "ada@example.com", "amount_cents": 1500, "ok": True, "ids": ("4155550100", None)}
    assert mask_pii_in(payload) == {"to": "a***@e***.com", "amount_cents": 1500, "ok": True, "ids": ("***00", None)}


@contextmanager
def configured_as_a_service() -> Iterator[None]:
    """Logging as a service configures it: one JSON handler on stdout, lines written without a LogRecord."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("svc", "INFO", "json")
    try:
        yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_a_configured_service_writes_the_same_fields_with_the_span_and_correlation_it_runs_in(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tracer = TracerProvider().get_tracer("t")
    with configured_as_a_service(), correlation_scope("cid-9"), tracer.start_as_current_span("request") as span:
        Logger("fmhl.http").info("http.request", {"route": "/api/v1/leads", "to": "ada@example.com"})
    [line] = [orjson.loads(text) for text in capsys.readouterr().out.splitlines()]
    context = span.get_span_context()
    assert line == {
        "level": "info",
        "event": "http.request",
        "timestamp": line["timestamp"],
        "service": "svc",
        "correlation_id": "cid-9",
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "logger": "fmhl.http",
        "metadata": {"route": "/api/v1/leads", "to": "a***@e***.com"},
    }
    assert datetime.fromisoformat(str(line["timestamp"])).tzinfo == UTC


def test_a_configured_service_logs_errors_with_their_stack(capsys: pytest.CaptureFixture[str]) -> None:
    with configured_as_a_service():
        try:
            raise ValueError("price must be positive")
        except ValueError as error:
            Logger("t").with_correlation("cid-3").error("charge_failed", error)
    [line] = [orjson.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["level"] == "error"
    assert line["correlation_id"] == "cid-3"
    assert line["error"]["type"] == "ValueError"
    assert "Traceback" in line["error"]["stack"]


def test_a_handler_added_to_a_logger_still_receives_its_lines(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    extra = logging.StreamHandler(stream)
    extra.setFormatter(JsonFormatter("svc"))
    logging.getLogger("t.audited").addHandler(extra)
    try:
        with configured_as_a_service():
            Logger("t.audited").info("seen twice")
    finally:
        logging.getLogger("t.audited").removeHandler(extra)
    assert orjson.loads(stream.getvalue())["event"] == "seen twice"
    assert orjson.loads(capsys.readouterr().out)["event"] == "seen twice"


def test_timestamps_are_utc_to_the_millisecond_as_isoformat_writes_them() -> None:
    for created in (0.0, 1_764_500_000.001, 1_764_500_059.999, 1_764_500_059.9999996, 1_764_503_999.5):
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "e", None, None)
        record.created = created
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert log_record_fields(record, "svc")["timestamp"] == expected
