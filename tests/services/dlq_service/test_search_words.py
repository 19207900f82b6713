"""Free text in the dead-letter list, on real PostgreSQL: whole words of the error message and the payload's values
first, substrings when no entry of the list has the words whole, newest first and paged either way."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from dlq_service import queries
from dlq_service.queries import WORD_WALK, WORD_WINDOWS, Filters, has_words, list_page, selected_ids
from libs.db.tables import DeadLetter

START = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(params=[WORD_WALK, 4, 1], ids=["walked whole", "walk of 4 then windows", "walk of 1 then windows"])
def walk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """How many entries a search for several words walks before its windows: all of a test's (the walk finds
    everything), or a few (the windows go on from where the walk stopped, across pages)."""
    monkeypatch.setattr(queries, "WORD_WALK", request.param)
    return int(request.param)


@pytest.fixture
def queue() -> str:
    """Each test searches a queue of its own, so it finds only what it stored."""
    return f"test-search-{uuid.uuid4().hex[:10]}"


async def store(engine: AsyncEngine, queue: str, *entries: tuple[str, dict[str, Any]]) -> list[uuid.UUID]:
    """Entries of (error message, payload), each a second newer than the one before; their ids, oldest first."""
    ids = [uuid.uuid4() for _ in entries]
    rows = [
        {"id": entry_id, "queue_name": queue, "error_message": message, "payload": payload, "failed_at": START,
         "created_at": START + timedelta(seconds=number), "last_failed_at": START + timedelta(seconds=number)}
        for number, (entry_id, (message, payload)) in enumerate(zip(ids, entries, strict=True))
    ]  # fmt: skip
    async with engine.begin() as connection:
        await connection.execute(insert(DeadLetter), rows)
    return ids


async def found(
    engine: AsyncEngine, queue: str, text: str, limit: int = 50, failed_from: datetime | None = None
) -> list[uuid.UUID]:
    """Every entry a search lists, newest first, page after page."""
    ids: list[uuid.UUID] = []
    cursor = None
    while True:
        page = await list_page(engine, Filters(queue=queue, text=text, failed_from=failed_from), limit, cursor)
        ids += [item.id for item in page.items]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


async def test_a_word_of_the_error_message_finds_the_entries_that_have_it_whole(
    engine: AsyncEngine, queue: str
) -> None:
    deadlock, _, other = await store(
        engine, queue, ("deadlock detected while charging", {}), ("deadlocked worker", {}), ("timeout", {})
    )
    assert await found(engine, queue, "DEADLOCK") == [deadlock]
    assert other not in await found(engine, queue, "deadlock")


async def test_an_email_address_finds_the_entry_whose_payload_holds_it_and_not_a_longer_address(
    engine: AsyncEngine, queue: str
) -> None:
    ada, _ = await store(
        engine,
        queue,
        ("refused", {"contact": {"email": "ada@example.com"}}),
        ("refused", {"email": "bada@example.com"}),
    )
    assert await found(engine, queue, "ada@example.com") == [ada]


async def test_every_word_must_be_there_in_the_message_or_the_payload(engine: AsyncEngine, queue: str) -> None:
    both, _ = await store(engine, queue, ("provider 7 cannot pay", {"category": "roofing"}), ("provider 7", {}))
    assert await found(engine, queue, "roofing provider") == [both]


async def test_words_no_entry_has_whole_are_searched_as_substrings(engine: AsyncEngine, queue: str) -> None:
    older, newer = await store(engine, queue, ("mailbox unavailable", {}), ("refused", {"email": "lead42@example.com"}))
    assert await found(engine, queue, "unavail") == [older]
    assert await found(engine, queue, "ead42@exam") == [newer]


async def test_a_search_nothing_matches_lists_nothing(engine: AsyncEngine, queue: str) -> None:
    await store(engine, queue, ("deadlock detected", {"email": "ada@example.com"}))
    page = await list_page(engine, Filters(queue=queue, text="zebra-unicorn"), 50, None)
    assert page.items == []
    assert page.next_cursor is None


async def test_a_substring_search_keeps_its_meaning_on_later_pages(engine: AsyncEngine, queue: str) -> None:
    ids = await store(engine, queue, *((f"recipient {n} unavailable", {}) for n in range(5)))
    assert await found(engine, queue, "navail", limit=2) == ids[::-1]


async def store_aged(engine: AsyncEngine, queue: str, *entries: tuple[str, timedelta]) -> None:
    """Entries of (error message, age): each created that long before now."""
    now = datetime.now(UTC)
    rows = [
        {"queue_name": queue, "error_message": message, "failed_at": now - age, "created_at": now - age,
         "last_failed_at": now - age}
        for message, age in entries
    ]  # fmt: skip
    async with engine.begin() as connection:
        await connection.execute(insert(DeadLetter), rows)


async def listed(engine: AsyncEngine, queue: str, text: str) -> list[uuid.UUID]:
    """The entries of `queue` having every word of `text`, in the list's order, asked in one plain statement."""
    async with engine.connect() as connection:
        query = (
            select(col(DeadLetter.id))
            .where(col(DeadLetter.queue_name) == queue, has_words(col(DeadLetter.search_words), text))
            .order_by(col(DeadLetter.created_at).desc(), col(DeadLetter.id).desc())
        )
        return list((await connection.scalars(query)).all())


@pytest.mark.usefixtures("walk")
async def test_a_search_for_several_words_lists_what_one_plain_statement_lists_across_its_windows(
    engine: AsyncEngine, queue: str
) -> None:
    # Matches in every window, some sharing a time, among entries that have one of the words only, pages of 3
    # straddling the windows' bounds.
    ages = [timedelta(minutes=5), *WORD_WINDOWS, WORD_WINDOWS[-1] * 3]
    entries = [
        (message, age + timedelta(seconds=offset))
        for age in ages
        for offset, message in enumerate(["needle in the hay", "hay", "needle", "hay needle", "needle hay"])
    ]
    await store_aged(engine, queue, *entries, ("hay needle", ages[1]), ("needle hay", ages[1]), ("hay", ages[1]))
    expected = await listed(engine, queue, "hay needle")
    assert len(expected) == 3 * len(ages) + 2
    assert await found(engine, queue, "hay needle", limit=3) == expected
    assert await found(engine, queue, "needle hay", limit=50) == expected


@pytest.mark.usefixtures("walk")
async def test_a_later_page_of_a_search_for_several_words_starts_after_its_cursors_entry(
    engine: AsyncEngine, queue: str
) -> None:
    await store_aged(engine, queue, *((f"needle {n} hay", timedelta(days=40, minutes=n)) for n in range(4)))
    expected = await listed(engine, queue, "needle hay")
    first = await list_page(engine, Filters(queue=queue, text="needle hay"), 1, None)
    assert [item.id for item in first.items] == expected[:1]
    second = await list_page(engine, Filters(queue=queue, text="needle hay"), 2, first.next_cursor)
    assert [item.id for item in second.items] == expected[1:3]


@pytest.mark.usefixtures("walk")
async def test_a_search_within_a_time_window_pages_newest_failure_first(engine: AsyncEngine, queue: str) -> None:
    ids = await store(engine, queue, *((f"deadlock {n} while charging", {}) for n in range(6)))
    since = START + timedelta(seconds=2)
    assert await found(engine, queue, "charging deadlock", limit=1, failed_from=since) == ids[:1:-1]
    assert await found(engine, queue, "charg", limit=2, failed_from=since) == ids[:1:-1]


async def test_a_redrive_selects_what_the_search_lists(engine: AsyncEngine, queue: str) -> None:
    words = await store(engine, queue, ("deadlock detected", {}), ("mailbox unavailable", {}))
    async with engine.connect() as connection:
        assert await selected_ids(connection, Filters(queue=queue, text="deadlock"), 100) == words[:1]
        assert await selected_ids(connection, Filters(queue=queue, text="unavail"), 100) == words[1:]
