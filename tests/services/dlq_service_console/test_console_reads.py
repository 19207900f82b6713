"""Pure rules behind the console's pages: a redrive's pace, the day's chart per queue, the no-consumer banner,
and what an edit is checked against."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from dlq_service.arrivals import hour_starts, per_queue
from dlq_service.console.overview import without_consumer
from dlq_service.edits import body_diff, contract_errors
from dlq_service.queues import QueuesOverview, QueueState
from dlq_service.redrive_history import pace
from dlq_service.retries import RedriveProgress, RedriveSelection
from libs.db.tables import RedriveStatus

NOW = datetime(2026, 11, 30, 14, 30, tzinfo=UTC)


def progress(**overrides: object) -> RedriveProgress:
    values: dict[str, object] = {
        "id": uuid.uuid4(), "status": RedriveStatus.running, "selected": 200, "sent": 90, "failed": 5,
        "skipped": 5, "rate_per_second": 50, "selection": RedriveSelection(), "requested_by": "admin",
        "created_at": NOW - timedelta(seconds=4), "finished_at": None,
    }  # fmt: skip
    return RedriveProgress.model_validate(values | overrides)


def test_a_running_redrives_pace_is_what_it_achieved_so_far() -> None:
    running = pace(progress(), NOW)
    assert (running.done, running.remaining, running.percent) == (100, 100, 50.0)
    assert running.rate_per_second == 25.0
    assert running.eta_s == 4.0


def test_a_finished_redrive_has_nothing_left_and_no_time_left() -> None:
    finished = pace(progress(status=RedriveStatus.cancelled, finished_at=NOW - timedelta(seconds=2)), NOW)
    assert (finished.remaining, finished.eta_s) == (0, None)
    assert finished.rate_per_second == 50.0


def test_a_redrive_that_has_sent_nothing_yet_has_no_rate() -> None:
    assert pace(progress(sent=0, failed=0, skipped=0), NOW).rate_per_second is None


def test_the_chart_has_24_hours_per_queue_with_the_hours_without_failures_at_zero() -> None:
    current = NOW.replace(minute=0)
    rows = [("email", current, 3), ("email", current - timedelta(hours=23), 2), ("gone", current, 1),
            ("email", current - timedelta(hours=30), 9)]  # fmt: skip
    series = {arrivals.queue: arrivals for arrivals in per_queue(rows, ["distribution", "email"], NOW)}
    assert list(series) == ["distribution", "email", "gone"]
    assert series["email"].counts[-1] == 3
    assert series["email"].counts[0] == 2
    assert series["email"].total == 5
    assert series["distribution"].counts == [0] * 24
    assert hour_starts(NOW)[-1] == current


def queue(name: str, depth: int | None, consumers: int | None) -> QueueState:
    return QueueState(name=name, depth=depth, active=0, consumers=consumers, error=None, failed_last_hour=0,
                      dlq_size=0, oldest_unresolved_age_s=None)  # fmt: skip


def test_a_work_queue_with_messages_and_no_consumer_gets_a_banner() -> None:
    overview = QueuesOverview(queues=[queue("email", 3, 0), queue("distribution", 0, 0), queue("report-export", 2, 1),
                                      queue("dlq.parking", 5, 0), queue("scheduled-jobs", None, None)])  # fmt: skip
    assert [state.name for state in without_consumer(overview)] == ["email"]


def test_an_edit_is_checked_against_the_contract_of_its_type_field_by_field() -> None:
    errors = contract_errors("email.send", '{"template": "nope", "to": "not-an-address", "params": {}}')
    assert {error.field for error in errors} == {"template", "to"}


def test_an_edit_that_meets_the_contract_has_no_error() -> None:
    assert contract_errors("email.send", '{"template": "new_lead", "to": "ann@example.com", "params": {}}') == []


def test_an_edit_of_a_type_without_a_contract_is_refused_as_a_whole() -> None:
    [error] = contract_errors("unknown.type", "{}")
    assert error.field == "body"


def test_an_edit_that_is_not_json_is_refused() -> None:
    assert contract_errors("email.send", "{not json") != []


def test_the_diff_of_an_edit_shows_the_changed_line_only_as_removed_and_added() -> None:
    diff = body_diff(b'{"to": "a@b.c", "template": "new_lead"}', b'{"template": "new_lead", "to": "x@y.z"}')
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert sorted(changed) == ['+  "template": "new_lead",', '+  "to": "x@y.z"', '-  "template": "new_lead"',
                               '-  "to": "a@b.c",']  # fmt: skip
