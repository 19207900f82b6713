"""Log lines are one JSON object each, with the plan's fields and the bound correlation id."""

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from libs.logging import ConsoleFormatter, JsonFormatter, Logger, configure_logging, correlation_scope


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
