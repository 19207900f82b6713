"""Failure groups on real PostgreSQL: each group's count, earliest and latest failure and latest error, as the
database's triggers keep them through every kind of write, concurrent ones included."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, insert, text, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from dlq_service.queries import DeadLetterGroup, groups
from libs.db.tables import DeadLetter, DeadLetterStatus

START = datetime(2026, 11, 1, tzinfo=UTC)
WAITING = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")


@pytest.fixture
def queue() -> str:
    """Each test's entries are of a queue of their own, so its groups are only what it stored."""
    return f"test-groups-{uuid.uuid4().hex[:10]}"


def entry(queue: str, minutes: int, error: str, fingerprint: str | None = "fp", **columns: object) -> dict[str, object]:
    """An entry first failing `minutes` after START and last failing an hour after that."""
    first = START + timedelta(minutes=minutes)
    return {"id": uuid.uuid4(), "queue_name": queue, "fingerprint": fingerprint, "error_type": f"{error}Error",
            "error_message": error, "failed_at": first, "first_failed_at": first,
            "last_failed_at": first + timedelta(hours=1), "status": DeadLetterStatus.failed,
            "resolved": False} | columns  # fmt: skip


async def add(engine: AsyncEngine, *rows: dict[str, object]) -> None:
    async with engine.begin() as connection:
        await connection.execute(insert(DeadLetter), list(rows))


async def group_of(engine: AsyncEngine, queue: str, fingerprint: str | None = "fp") -> DeadLetterGroup | None:
    return next(
        (group for group in (await groups(engine)).groups if (group.queue, group.fingerprint) == (queue, fingerprint)),
        None,
    )


def shown(group: DeadLetterGroup | None) -> tuple[object, ...] | None:
    if group is None:
        return None
    return group.count, group.first_seen, group.last_seen, group.error_type, group.sample_error


async def test_a_group_shows_its_earliest_failure_and_its_latest_failures_error(
    engine: AsyncEngine, queue: str
) -> None:
    await add(engine, entry(queue, 10, "middle"), entry(queue, 0, "oldest"))
    await add(engine, entry(queue, 20, "newest"))
    assert shown(await group_of(engine, queue)) == (
        3, START, START + timedelta(minutes=80), "newestError", "newest"
    )  # fmt: skip


async def test_resolving_a_groups_latest_entry_shows_the_latest_one_left(engine: AsyncEngine, queue: str) -> None:
    oldest, middle, newest = entry(queue, 0, "oldest"), entry(queue, 10, "middle"), entry(queue, 20, "newest")
    await add(engine, oldest, middle, newest)
    async with engine.begin() as connection:
        await connection.execute(
            update(DeadLetter)
            .where(col(DeadLetter.id).in_([oldest["id"], newest["id"]]))
            .values(status=DeadLetterStatus.resolved, resolved=True)
        )
    assert shown(await group_of(engine, queue)) == (
        1, START + timedelta(minutes=10), START + timedelta(minutes=70), "middleError", "middle"
    )  # fmt: skip


async def test_a_later_failure_of_an_entry_makes_its_error_the_groups_latest(engine: AsyncEngine, queue: str) -> None:
    older, newer = entry(queue, 0, "older"), entry(queue, 10, "newer")
    await add(engine, older, newer)
    async with engine.begin() as connection:
        await connection.execute(
            update(DeadLetter)
            .where(col(DeadLetter.id) == older["id"])
            .values(last_failed_at=START + timedelta(hours=5), error_message="again")
        )
    assert shown(await group_of(engine, queue)) == (2, START, START + timedelta(hours=5), "olderError", "again")


async def test_deleting_entries_leaves_the_group_with_what_remains(engine: AsyncEngine, queue: str) -> None:
    oldest, newest = entry(queue, 0, "oldest"), entry(queue, 20, "newest")
    await add(engine, oldest, newest)
    async with engine.begin() as connection:
        await connection.execute(delete(DeadLetter).where(col(DeadLetter.id) == newest["id"]))
    assert shown(await group_of(engine, queue)) == (1, START, START + timedelta(hours=1), "oldestError", "oldest")
    async with engine.begin() as connection:
        await connection.execute(delete(DeadLetter).where(col(DeadLetter.id) == oldest["id"]))
    assert await group_of(engine, queue) is None


async def test_resolved_entries_and_other_groups_leave_a_group_as_it_is(engine: AsyncEngine, queue: str) -> None:
    await add(engine, entry(queue, 0, "kept"))
    await add(engine, entry(queue, 30, "resolved", status=DeadLetterStatus.resolved, resolved=True),
              entry(queue, 40, "other", fingerprint="other"))  # fmt: skip
    assert shown(await group_of(engine, queue)) == (1, START, START + timedelta(hours=1), "keptError", "kept")


async def test_entries_without_a_fingerprint_are_counted_without_times(engine: AsyncEngine, queue: str) -> None:
    await add(engine, entry(queue, 0, "unknown", fingerprint=None))
    assert shown(await group_of(engine, queue, None)) == (1, None, None, None, None)


async def test_a_writer_that_waited_for_the_group_shows_the_entries_of_the_writer_before_it(
    engine: AsyncEngine, queue: str
) -> None:
    # The first writer's newer entry is committed while the second, older one waits for the group: the group
    # must show the newer one, whatever the second writer's statement saw when it began.
    async with engine.connect() as first:
        await first.begin()
        await first.execute(insert(DeadLetter), [entry(queue, 20, "first writer")])
        second = asyncio.create_task(add(engine, entry(queue, 0, "second writer")))
        async with engine.connect() as watcher:
            deadline = asyncio.get_running_loop().time() + 10
            while not await watcher.scalar(WAITING):
                assert asyncio.get_running_loop().time() < deadline, "the second writer never waited for the group"
                await asyncio.sleep(0.01)
        await first.commit()
    await second
    assert shown(await group_of(engine, queue)) == (
        2, START, START + timedelta(minutes=80), "first writerError", "first writer"
    )  # fmt: skip
