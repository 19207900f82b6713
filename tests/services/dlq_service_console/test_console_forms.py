"""The console's query strings and forms, read into the domain's filters: pure, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from dlq_service.console.forms import entity_link, link, list_filters, rate, safe_next
from libs.db.tables import DeadLetterReason, DeadLetterStatus


def test_every_list_filter_is_read_from_the_query_string() -> None:
    filters, parsed = list_filters({"queue": "email", "status": "failed", "reason": "error", "error_type": "X",
                                    "service": "email-worker", "fingerprint": "f", "from": "2026-11-30T14:00",
                                    "to": "2026-11-30T15:00+01:00", "q": "refused ann"})  # fmt: skip
    assert filters.queue == "email"
    assert filters.status == DeadLetterStatus.failed
    assert filters.reason == DeadLetterReason.error
    assert filters.service == "email-worker"
    assert filters.failed_from == datetime(2026, 11, 30, 14, tzinfo=UTC)
    assert filters.failed_to == datetime(2026, 11, 30, 14, tzinfo=UTC)
    assert filters.text == "refused ann"
    assert parsed.errors == {}


def test_a_value_that_does_not_parse_is_named_and_left_out() -> None:
    filters, parsed = list_filters({"status": "bogus", "from": "yesterday", "queue": "x" * 101})
    assert (filters.status, filters.failed_from, filters.queue) == (None, None, None)
    assert set(parsed.errors) == {"status", "from", "queue"}
    assert "failed" in parsed.errors["status"]


def test_empty_fields_of_a_submitted_form_filter_nothing() -> None:
    filters, parsed = list_filters({"queue": "", "status": "", "q": "  "})
    assert filters.conditions() == []
    assert parsed.values == {}


def test_a_link_keeps_only_the_parameters_with_a_value_encoded() -> None:
    assert link("/console/dead-letters", queue="email", q="a&b c", status=None) == (
        "/console/dead-letters?queue=email&q=a%26b+c"
    )
    assert link("/console/audit") == "/console/audit"


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/console", "/\\evil", "/api/v1", None, ""])
def test_after_login_the_browser_goes_nowhere_but_the_console(target: str | None) -> None:
    assert safe_next(target) == "/console"


def test_after_login_the_browser_goes_back_to_the_console_page_it_asked_for() -> None:
    assert safe_next("/console/dead-letters?q=x") == "/console/dead-letters?q=x"


def test_an_audited_entity_links_to_its_page_only_when_its_id_is_one() -> None:
    entry = uuid.uuid4()
    assert entity_link("dead_letter", str(entry)) == f"/console/dead-letters/{entry}"
    assert entity_link("dead_letter", "javascript:alert(1)") is None
    assert entity_link("provider", str(entry)) is None
    assert entity_link("dead_letter_group", "email/abc") == "/console/dead-letters?queue=email&fingerprint=abc"
    assert (entity_link("scheduled_job", "dlq-cleanup") or "").startswith("/console/jobs#job-")


@pytest.mark.parametrize(("asked", "expected"), [(None, 10), ("", 10), ("abc", 10), ("0", 1), ("50", 50), ("999", 200)])
def test_a_redrive_rate_from_a_form_is_bounded(asked: str | None, expected: int) -> None:
    assert rate(asked, default=10, maximum=200) == expected
