"""DLQ list filters and what the list selects, checked on the SQL they compile to (no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ClauseElement, create_mock_engine, select
from sqlmodel import col

from dlq_service.queries import SUMMARY, Filters, like_pattern, search_words, summary
from libs.db.tables import DeadLetter, DeadLetterReason, DeadLetterStatus

# The service's own dialect, without a connection: values are written in, as PostgreSQL would read them.
ASYNCPG = create_mock_engine("postgresql+asyncpg://", executor=lambda *_: None).dialect


def sql(statement: ClauseElement) -> str:
    return str(statement.compile(dialect=ASYNCPG, compile_kwargs={"literal_binds": True}))


def where(filters: Filters) -> list[str]:
    return [sql(condition) for condition in filters.conditions()]


def test_no_filter_matches_every_entry() -> None:
    assert Filters().conditions() == []


def test_each_given_filter_is_an_equality_on_its_column() -> None:
    filters = Filters(queue="email", status=DeadLetterStatus.failed, reason=DeadLetterReason.expired,
                      error_type="SmtpRefused", fingerprint="abc")  # fmt: skip
    assert where(filters) == [
        "dead_letter_queue.queue_name = 'email'",
        "dead_letter_queue.status = 'failed'",
        "dead_letter_queue.reason = 'expired'",
        "dead_letter_queue.error_type = 'SmtpRefused'",
        "dead_letter_queue.fingerprint = 'abc'",
    ]


def test_the_time_window_includes_its_start_and_excludes_its_end() -> None:
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC)
    assert where(Filters(failed_from=start, failed_to=end)) == [
        "dead_letter_queue.last_failed_at >= '2026-11-01 00:00:00+00:00'",
        "dead_letter_queue.last_failed_at < '2026-11-02 00:00:00+00:00'",
    ]


def test_every_search_word_must_appear_in_the_error_message_or_the_payload() -> None:
    assert where(Filters(text="boom  ada@example")) == [
        "dead_letter_queue.error_message ILIKE '%boom%' OR CAST(dead_letter_queue.payload AS TEXT) ILIKE '%boom%'",
        "dead_letter_queue.error_message ILIKE '%ada@example%' "
        "OR CAST(dead_letter_queue.payload AS TEXT) ILIKE '%ada@example%'",
    ]


def test_at_most_ten_search_words_count() -> None:
    assert search_words(" ".join(f"w{n}" for n in range(15))) == [f"w{n}" for n in range(10)]
    assert search_words("   ") == []
    assert search_words(None) == []


def test_like_wildcards_in_a_search_word_match_themselves() -> None:
    assert like_pattern("50%_off\\") == "%50\\%\\_off\\\\%"


def test_the_list_selects_no_raw_body_headers_or_stack_trace() -> None:
    selected = sql(SUMMARY)
    for column in ("raw_body", "headers", "stack_trace"):
        assert f"dead_letter_queue.{column}" not in selected
    assert "dead_letter_queue.queue_name AS queue" in selected


def test_a_list_row_masks_contact_details_in_its_payload() -> None:
    row: dict[str, Any] = dict.fromkeys(SUMMARY.selected_columns.keys()) | {
        "id": "8b0e1b5e-8d1e-4c1e-9a51-6f0b1c4f5d11", "queue": "email", "reason": "error", "status": "failed",
        "retry_count": 0, "created_at": datetime(2026, 11, 30, tzinfo=UTC),
        "payload": {"contact": {"email": "ada@example.com"}, "zip": "94107"},
    }  # fmt: skip
    assert summary(row).payload == {"contact": {"email": "a***@example.com"}, "zip": "94107"}


def test_filters_join_with_and() -> None:
    query = select(col(DeadLetter.id)).where(*Filters(queue="email", text="boom").conditions())
    assert sql(query).endswith(
        "WHERE dead_letter_queue.queue_name = 'email' AND (dead_letter_queue.error_message ILIKE '%boom%' "
        "OR CAST(dead_letter_queue.payload AS TEXT) ILIKE '%boom%')"
    )
