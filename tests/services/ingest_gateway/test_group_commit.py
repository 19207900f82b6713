"""Leads of concurrent requests stored together (group commit): one statement per batch, each request its own
outcome (new, a repeat answered like the first, refused alone), every lead of a batch the database cannot take now
refused as retry-later, and a lead not taken into a batch in time withdrawn, never stored."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import col

from ingest_gateway import submissions
from ingest_gateway.accounts import AuthenticatedSource, create_lead_source
from ingest_gateway.submissions import GroupCommit, LeadSubmission, Submitted
from libs.contracts import Contact
from libs.db.tables import Lead, LeadStatus
from libs.db.tables.outbox import OutboxMessage
from libs.telemetry import counter, setup_telemetry
from libs.web.app import retry_later

LOCKED_OUT = text("LOCK TABLE leads IN SHARE MODE")
"""Held by another transaction, it keeps every insert into leads waiting."""


@pytest.fixture
async def source(engine: AsyncEngine) -> AuthenticatedSource:
    source_id, _ = await create_lead_source(engine, f"source-{uuid.uuid4().hex[:6]}", trusted=False)
    return AuthenticatedSource(id=source_id, name="forms", trusted=False)


@pytest.fixture
async def impatient_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Gives up a lock wait after 300 ms, as a busy database refuses a statement (lock_timeout, 55P03)."""
    engine = create_async_engine(database_url, connect_args={"server_settings": {"lock_timeout": "300"}})
    yield engine
    await engine.dispose()


def lead(external_id: str | None = None) -> LeadSubmission:
    contact = Contact(name="Ada", email="ada@example.com", phone="+1 415 555 0100")
    return LeadSubmission(external_id=external_id or uuid.uuid4().hex, category="roofing", zip="94107",
                          contact=contact)  # fmt: skip


async def submit_together(
    commits: GroupCommit, source: AuthenticatedSource, leads: list[LeadSubmission], key: str | None = None
) -> list[Submitted | BaseException]:
    """Submitted at once, in the list's order, as concurrent requests are."""
    return await asyncio.gather(
        *(commits.submit(submissions.values(source, each, key)) for each in leads), return_exceptions=True
    )


async def stored(engine: AsyncEngine, source: AuthenticatedSource) -> dict[str, uuid.UUID]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(col(Lead.external_id), col(Lead.id)).where(col(Lead.source_id) == source.id)
        )
        return {row.external_id: row.id for row in rows}


async def staged_in_order(engine: AsyncEngine, lead_ids: list[uuid.UUID]) -> list[str]:
    """The message ids of these leads' staged events, in the order the relay takes them."""
    message_ids = [f"lead.submitted:{lead_id}" for lead_id in lead_ids]
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(col(OutboxMessage.message_id))
            .where(col(OutboxMessage.message_id).in_(message_ids))
            .order_by(col(OutboxMessage.available_at), col(OutboxMessage.id))
        )
        return list(rows.scalars())


async def test_concurrent_leads_are_committed_by_one_statement(
    engine: AsyncEngine, source: AuthenticatedSource
) -> None:
    commits = GroupCommit(engine, max_batch=100, wait_s=5)
    await submit_together(commits, source, [lead() for _ in range(3)])  # the first, written at once, alone
    leads = [lead() for _ in range(20)]
    outcomes = await submit_together(commits, source, leads)
    assert all(isinstance(outcome, Submitted) and outcome.created for outcome in outcomes)
    async with engine.connect() as connection:
        # A transaction's now() is its start: one value for every lead that statement stored.
        committed_at = await connection.scalars(
            select(col(Lead.created_at)).where(col(Lead.external_id).in_([each.external_id for each in leads]))
        )
        assert len(set(committed_at)) < len(leads)


async def test_a_batch_stores_each_lead_and_stages_its_event_in_order_of_arrival(
    engine: AsyncEngine, source: AuthenticatedSource
) -> None:
    leads = [lead() for _ in range(30)]
    outcomes = await submit_together(GroupCommit(engine, max_batch=7, wait_s=5), source, leads)
    lead_ids = [outcome.lead_id for outcome in outcomes if isinstance(outcome, Submitted) and outcome.created]
    assert len(lead_ids) == len(leads)
    assert await stored(engine, source) == {
        each.external_id: lead_id for each, lead_id in zip(leads, lead_ids, strict=True)
    }
    assert await staged_in_order(engine, lead_ids) == [f"lead.submitted:{lead_id}" for lead_id in lead_ids]


async def test_a_repeat_in_a_batch_answers_like_the_first_and_stages_nothing(
    engine: AsyncEngine, source: AuthenticatedSource
) -> None:
    commits = GroupCommit(engine, max_batch=100, wait_s=5)
    [earlier] = await submit_together(commits, source, [lead("ext-earlier")])
    assert isinstance(earlier, Submitted)
    outcomes = await submit_together(
        commits, source, [lead("ext-new"), lead("ext-earlier"), lead("ext-twice"), lead("ext-twice")]
    )
    new, repeat, twice, twice_again = outcomes
    assert isinstance(new, Submitted)
    assert isinstance(repeat, Submitted)
    assert isinstance(twice, Submitted)
    assert isinstance(twice_again, Submitted)
    assert (repeat.lead_id, repeat.status, repeat.created) == (earlier.lead_id, LeadStatus.submitted, False)
    assert (new.created, twice.created, twice_again.created) == (True, True, False)
    assert twice_again.lead_id == twice.lead_id
    leads = await stored(engine, source)
    assert leads == {"ext-earlier": earlier.lead_id, "ext-new": new.lead_id, "ext-twice": twice.lead_id}
    assert await staged_in_order(engine, list(leads.values())) == [
        f"lead.submitted:{lead_id}" for lead_id in (earlier.lead_id, new.lead_id, twice.lead_id)
    ]


async def test_the_same_idempotency_key_in_a_batch_makes_one_lead(
    engine: AsyncEngine, source: AuthenticatedSource
) -> None:
    first, repeat = await submit_together(
        GroupCommit(engine, max_batch=100, wait_s=5), source, [lead("ext-a"), lead("ext-b")], key="key-1"
    )
    assert isinstance(first, Submitted)
    assert isinstance(repeat, Submitted)
    assert (repeat.lead_id, first.created, repeat.created) == (first.lead_id, True, False)
    assert await stored(engine, source) == {"ext-a": first.lead_id}


async def test_a_lead_postgresql_refuses_fails_alone_and_the_rest_of_its_batch_is_stored(
    engine: AsyncEngine, source: AuthenticatedSource
) -> None:
    gone = AuthenticatedSource(id=uuid.uuid4(), name="deleted meanwhile", trusted=False)
    commits = GroupCommit(engine, max_batch=100, wait_s=5)
    leads = [lead("ext-1"), lead("ext-2"), lead("ext-3")]
    outcomes = await asyncio.gather(
        commits.submit(submissions.values(source, leads[0], None)),
        commits.submit(submissions.values(gone, leads[1], None)),
        commits.submit(submissions.values(source, leads[2], None)),
        return_exceptions=True,
    )
    first, refused, third = outcomes
    assert isinstance(refused, IntegrityError)
    assert not retry_later(refused)  # the request's own fault: not answered "retry later"
    assert isinstance(first, Submitted)
    assert isinstance(third, Submitted)
    assert await stored(engine, source) == {"ext-1": first.lead_id, "ext-3": third.lead_id}
    assert await staged_in_order(engine, [first.lead_id, third.lead_id]) == [
        f"lead.submitted:{first.lead_id}",
        f"lead.submitted:{third.lead_id}",
    ]


async def test_a_batch_the_database_cannot_take_now_refuses_every_lead_as_retry_later(
    engine: AsyncEngine, impatient_engine: AsyncEngine, source: AuthenticatedSource
) -> None:
    commits = GroupCommit(impatient_engine, max_batch=100, wait_s=5)
    async with engine.begin() as holder:
        await holder.execute(LOCKED_OUT)
        outcomes = await submit_together(commits, source, [lead() for _ in range(5)])
    assert all(isinstance(outcome, Exception) and retry_later(outcome) for outcome in outcomes)
    assert await stored(engine, source) == {}
    [after] = await submit_together(commits, source, [lead("ext-after")])
    assert isinstance(after, Submitted)
    assert after.created


@contextlib.asynccontextmanager
async def two_behind_a_lock(
    engine: AsyncEngine, commits: GroupCommit, source: AuthenticatedSource
) -> AsyncIterator[tuple[asyncio.Task[Submitted], asyncio.Task[Submitted]]]:
    """While leads is locked: "ext-taken" submitted first (taken into a batch of one, which waits on the lock),
    then "ext-second" (waiting behind that batch). The lock is released on leaving."""
    async with engine.begin() as holder:
        await holder.execute(LOCKED_OUT)
        taken = asyncio.create_task(commits.submit(submissions.values(source, lead("ext-taken"), None)))
        second = asyncio.create_task(commits.submit(submissions.values(source, lead("ext-second"), None)))
        yield taken, second


async def test_a_lead_not_taken_into_a_batch_in_time_is_withdrawn_and_never_stored(
    engine: AsyncEngine, source: AuthenticatedSource
) -> None:
    commits = GroupCommit(engine, max_batch=1, wait_s=0.3)
    async with two_behind_a_lock(engine, commits, source) as (taken, withdrawn):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(withdrawn, timeout=10)
        assert not taken.done()  # in the batch waiting on the lock: it waits past wait_s for its outcome
    outcome = await asyncio.wait_for(taken, timeout=10)
    assert outcome.created
    assert await stored(engine, source) == {"ext-taken": outcome.lead_id}


async def test_a_lead_whose_request_went_away_before_a_batch_took_it_is_not_stored(
    engine: AsyncEngine, source: AuthenticatedSource
) -> None:
    commits = GroupCommit(engine, max_batch=1, wait_s=5)
    async with two_behind_a_lock(engine, commits, source) as (taken, gone):
        await asyncio.sleep(0)
        gone.cancel()
    outcome = await asyncio.wait_for(taken, timeout=10)
    assert await stored(engine, source) == {"ext-taken": outcome.lead_id}


async def test_new_leads_are_counted_and_repeats_are_not(engine: AsyncEngine, source: AuthenticatedSource) -> None:
    telemetry = setup_telemetry("group-commit-test")
    stored_leads = counter(telemetry.meter, "fmhl_leads_submitted_total", "Leads stored.")
    commits = GroupCommit(engine, max_batch=100, wait_s=5, stored=stored_leads)
    first = lead()
    await submit_together(commits, source, [first, lead()])
    await submit_together(commits, source, [first, lead(), lead(), first])
    assert "fmhl_leads_submitted_total 4.0" in telemetry.exposition().decode()
