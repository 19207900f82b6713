"""The inbox query: a provider's rows only, strictly older than the cursor, `to` counted as a whole day."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from ingest_gateway.errors import Invalid
from ingest_gateway.inbox import InboxQuery, statement
from libs.db.keyset import encode_cursor
from libs.db.tables import AssignmentStatus

PROVIDER = uuid.uuid4()


def compiled(query: InboxQuery) -> tuple[str, dict[str, object]]:
    sql = statement(query).compile()
    return str(sql), dict(sql.params)


def test_a_first_page_asks_one_row_more_than_the_limit_for_the_provider_alone() -> None:
    sql, params = compiled(InboxQuery(PROVIDER, limit=20))
    assert PROVIDER in params.values()
    assert 21 in params.values()
    assert "ORDER BY assignments.created_at DESC, assignments.id DESC" in sql


def test_a_cursor_continues_strictly_after_the_row_it_names() -> None:
    at, row_id = datetime(2030, 1, 1, 12, tzinfo=UTC), uuid.uuid4()
    sql, params = compiled(InboxQuery(PROVIDER, limit=20, cursor=encode_cursor(at, row_id)))
    assert "(assignments.created_at, assignments.id) < (" in sql
    assert {at, row_id} <= set(params.values())


def test_a_cursor_this_api_did_not_return_is_invalid_naming_the_cursor() -> None:
    with pytest.raises(Invalid) as refused:
        statement(InboxQuery(PROVIDER, limit=20, cursor="not-a-cursor"))
    assert refused.value.field == "cursor"


def test_the_to_date_includes_its_whole_day() -> None:
    sql, params = compiled(InboxQuery(PROVIDER, limit=20, date_from=date(2030, 1, 1), date_to=date(2030, 1, 31)))
    assert "assignments.created_at >=" in sql
    assert "assignments.created_at <" in sql
    assert {date(2030, 1, 1), date(2030, 1, 31) + timedelta(days=1)} <= set(params.values())
    assert date(2030, 1, 31) not in params.values()


def test_a_status_filter_narrows_to_that_status() -> None:
    sql, params = compiled(InboxQuery(PROVIDER, limit=20, status=AssignmentStatus.refunded))
    assert "assignments.status =" in sql
    assert AssignmentStatus.refunded in params.values()
    assert "assignments.status =" not in compiled(InboxQuery(PROVIDER, limit=20))[0]


@pytest.mark.parametrize(
    "at",
    [datetime(2030, 1, 1, 12), datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=23)))],
    ids=["without-zone", "beyond-utc-max"],
)
def test_a_cursor_time_the_database_cannot_compare_is_invalid(at: datetime) -> None:
    with pytest.raises(Invalid) as refused:
        statement(InboxQuery(PROVIDER, limit=20, cursor=encode_cursor(at, uuid.uuid4())))
    assert refused.value.field == "cursor"


def test_a_range_ending_on_the_calendars_last_day_is_invalid_naming_to() -> None:
    with pytest.raises(Invalid) as refused:
        statement(InboxQuery(PROVIDER, limit=20, date_to=date.max))
    assert refused.value.field == "to"
