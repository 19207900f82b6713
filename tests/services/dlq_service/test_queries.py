"""DLQ list filters and what the list selects, checked on the SQL they compile to (no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from sqlalchemy import ClauseElement, Select, create_mock_engine, select
from sqlmodel import col

from dlq_service.queries import (
    GROUPS,
    SUMMARY,
    UNRESOLVED,
    WORD_WINDOWS,
    DeadLetterGroups,
    Filters,
    ListedPage,
    as_json,
    like_pattern,
    page_query,
    page_read,
    search_words,
    summary,
    summary_fields,
    utc_time,
    window_read,
    word_windows,
)
from libs.db.keyset import encode_cursor
from libs.db.tables import DeadLetter, DeadLetterReason, DeadLetterStatus

# The service's own dialect, without a connection: values are written in, as PostgreSQL would read them.
ASYNCPG = create_mock_engine("postgresql+asyncpg://", executor=lambda *_: None).dialect


def sql(statement: ClauseElement) -> str:
    return str(statement.compile(dialect=ASYNCPG, compile_kwargs={"literal_binds": True}))


def bound(statement: Select[Any], values: dict[str, Any]) -> Select[Any]:
    return statement.params(values)


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


def test_a_search_asks_the_stored_words_for_every_search_word_whole() -> None:
    assert where(Filters(text="boom  ada@example.com")) == [
        "dead_letter_queue.search_words @@ plainto_tsquery(CAST('simple' AS REGCONFIG), 'boom ada@example.com')"
    ]


def test_a_substring_search_needs_every_word_in_the_error_message_or_the_payload() -> None:
    assert where(Filters(text="boom  ada@example", substring=True)) == [
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


def test_the_list_selects_no_raw_body_headers_or_stack_trace_only_a_bounded_piece_of_the_payload() -> None:
    selected = sql(SUMMARY)
    for column in ("headers", "stack_trace"):
        assert f"dead_letter_queue.{column}" not in selected
    assert "dead_letter_queue.payload," not in selected
    assert "left(CAST(dead_letter_queue.payload AS TEXT), 1201) AS payload_text" in selected
    assert "SUBSTRING(dead_letter_queue.raw_body FROM 1 FOR 1201)" in selected
    assert "dead_letter_queue.queue_name AS queue" in selected


def _row(**values: Any) -> tuple[Any, ...]:
    """A row of SUMMARY, as the database gives it: its columns' values in order."""
    return tuple((dict.fromkeys(SUMMARY.selected_columns.keys()) | {
        "id": "8b0e1b5e-8d1e-4c1e-9a51-6f0b1c4f5d11", "queue": "email", "reason": "error", "status": "failed",
        "retry_count": 0, "created_at": datetime(2026, 11, 30, tzinfo=UTC), "body_bytes": 10,
    } | values).values())  # fmt: skip


def test_a_list_row_shows_a_masked_preview_of_its_payload() -> None:
    row = _row(payload_text='{"zip": "94107", "contact": {"email": "ada@example.com"}}')
    assert summary(row).payload_preview == '{"zip": "94107", "contact": {"email": "a***@e***.com"}}'


def test_a_list_row_masks_addresses_and_phone_numbers_in_its_error_message_and_ids() -> None:
    row = _row(error_message="550 5.1.1 <ada@example.com>: mailbox unavailable", message_id="mail-to:bob@corp.example",
               correlation_id="+1 415 555 0100")  # fmt: skip
    listed = summary(row)
    assert listed.error_message == "550 5.1.1 <a***@e***.com>: mailbox unavailable"
    assert listed.message_id == "mail-to:b***@c***.example"
    assert listed.correlation_id == "***00"


def test_a_body_that_is_not_json_is_previewed_from_its_bytes() -> None:
    assert summary(_row(body_head=b"plain \xff text to ada@example.com")).payload_preview == (
        "plain \ufffd text to a***@e***.com"
    )


def test_a_time_past_the_range_of_utc_is_refused_before_it_reaches_the_driver() -> None:
    assert utc_time(datetime(2026, 1, 1)) == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="out of range"):
        utc_time(datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14))))


def test_filters_join_with_and() -> None:
    query = select(col(DeadLetter.id)).where(*Filters(queue="email", text="boom").conditions())
    assert sql(query).endswith(
        "WHERE dead_letter_queue.queue_name = 'email' "
        "AND (dead_letter_queue.search_words @@ plainto_tsquery(CAST('simple' AS REGCONFIG), 'boom'))"
    )


def test_the_windows_of_a_search_for_several_words_follow_one_another_back_from_its_start() -> None:
    start = datetime(2026, 11, 30, 12, tzinfo=UTC)
    bounds = [start - reach for reach in WORD_WINDOWS]
    assert list(word_windows(start, None)) == list(zip([*bounds, None], [None, *bounds], strict=True))


def test_the_windows_end_with_the_one_that_reaches_the_lists_own_lower_bound() -> None:
    start = datetime(2026, 11, 30, 12, tzinfo=UTC)
    floor = start - timedelta(days=3)
    assert list(word_windows(start, floor)) == [
        (start - WORD_WINDOWS[0], None),
        (start - WORD_WINDOWS[1], start - WORD_WINDOWS[0]),
        (None, start - WORD_WINDOWS[1]),
    ]


def test_a_window_starting_before_the_earliest_time_takes_everything_older() -> None:
    start = datetime(1, 1, 1, 12, tzinfo=UTC)
    assert list(word_windows(start, None)) == [(start - WORD_WINDOWS[0], None), (None, start - WORD_WINDOWS[0])]


def test_a_windows_times_are_written_into_its_statement_on_the_lists_order() -> None:
    since, before = datetime(2026, 11, 29, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC)
    statement, values = window_read(Filters(text="provider deadlock"), 50, None, since, before)
    compiled = str(bound(statement, values).compile(dialect=ASYNCPG, compile_kwargs={"render_postcompile": True}))
    assert "dead_letter_queue.created_at >= '2026-11-29 00:00:00+00:00'" in compiled
    assert "dead_letter_queue.created_at < '2026-11-30 00:00:00+00:00'" in compiled
    assert values["words"] == "provider deadlock"
    windowed = sql(bound(*window_read(Filters(text="a b", failed_from=since), 50, None, since, None)))
    assert "dead_letter_queue.last_failed_at >= '2026-11-29 00:00:00+00:00'" in windowed


def test_a_list_without_a_time_window_is_newest_entry_first() -> None:
    query = sql(page_query(Filters(queue="email"), 50, None))
    assert query.endswith("ORDER BY dead_letter_queue.created_at DESC, dead_letter_queue.id DESC")


def test_a_list_without_an_equality_filter_reads_its_rows_directly() -> None:
    query = sql(page_query(Filters(failed_from=datetime(2026, 11, 1, tzinfo=UTC)), 50, None))
    assert "JOIN" not in query
    assert query.endswith("ORDER BY dead_letter_queue.last_failed_at DESC, dead_letter_queue.id DESC \n LIMIT 51")


def test_a_page_filtered_by_equality_takes_its_ids_from_the_filters_index_then_the_rows_by_id() -> None:
    query = sql(page_query(Filters(queue="email"), 50, None))
    assert (
        "JOIN (SELECT dead_letter_queue.id AS id \nFROM dead_letter_queue \n"
        "WHERE dead_letter_queue.queue_name = 'email' "
        "ORDER BY dead_letter_queue.created_at DESC, dead_letter_queue.id DESC \n LIMIT 51) AS page "
        "ON dead_letter_queue.id = page.id"
    ) in query


def test_a_time_window_lists_the_newest_failure_first_and_pages_on_it() -> None:
    window = Filters(failed_from=datetime(2026, 11, 1, tzinfo=UTC))
    first = sql(page_query(window, 50, None))
    assert "ORDER BY dead_letter_queue.last_failed_at DESC, dead_letter_queue.id DESC" in first
    cursor = encode_cursor(datetime(2026, 11, 2, tzinfo=UTC), uuid.UUID(int=7))
    assert "(dead_letter_queue.last_failed_at, dead_letter_queue.id) < ('2026-11-02" in sql(
        page_query(window, 50, cursor)
    )


def test_groups_come_from_the_kept_counts_without_grouping_the_entries() -> None:
    groups = sql(GROUPS)
    assert "FROM dead_letter_groups" in groups
    assert "GROUP BY" not in groups
    assert "dead_letter_groups.unresolved > 0" in groups


def test_the_unresolved_condition_is_written_into_the_statement_for_the_partial_indexes() -> None:
    compiled = str(UNRESOLVED.compile(dialect=ASYNCPG, compile_kwargs={"render_postcompile": True}))
    assert compiled == "dead_letter_queue.status != 'resolved'"


def test_a_pages_json_is_the_json_of_its_validated_model() -> None:
    failed_at = datetime(2026, 11, 30, 9, 1, 2, 345678, tzinfo=UTC)
    row = _row(id=uuid.UUID(int=5), error_message="550 <ada@example.com>", payload_text='{"phone": "+1 415 555 0100"}',
               last_failed_at=failed_at, first_failed_at=failed_at.replace(microsecond=0), attempts=4,
               resolution="manual", status=DeadLetterStatus.resolved)  # fmt: skip
    page = ListedPage([summary_fields(row)], next_cursor=encode_cursor(failed_at, uuid.UUID(int=5)))
    assert orjson.loads(page.json()) == page.model().model_dump(mode="json")


def test_the_groups_json_is_the_json_of_the_validated_model() -> None:
    seen = datetime(2026, 11, 30, 9, 1, 2, 5, tzinfo=UTC)
    fields = {"groups": [{"queue": "email", "fingerprint": None, "count": 3, "first_seen": seen, "last_seen": None,
                          "error_type": "SmtpRefused", "sample_error": "refused"}]}  # fmt: skip
    assert orjson.loads(as_json(fields)) == DeadLetterGroups.model_validate(fields).model_dump(mode="json")


def test_pages_of_the_same_filters_share_one_statement_with_their_values_bound() -> None:
    first, first_values = page_read(Filters(queue="email", text="boom"), 50, None)
    other, other_values = page_read(Filters(queue="sms", text="bang"), 20, None)
    assert first is other
    assert (first_values["queue"], first_values["words"], first_values["page_rows"]) == ("email", "boom", 51)
    assert (other_values["queue"], other_values["words"], other_values["page_rows"]) == ("sms", "bang", 21)
