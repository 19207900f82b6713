"""Lead sources' API keys as each gateway process remembers them: a revoked key is refused within the TTL, and
concurrent requests with a key not remembered share one lookup."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import event, insert, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from ingest_gateway.accounts import SourceKeys, create_lead_source, hash_api_key, new_api_key
from libs.db.tables import LeadSource

TTL_S = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def revoke(engine: AsyncEngine, source_id: uuid.UUID) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(LeadSource).where(col(LeadSource.id) == source_id).values(api_key_hash=uuid.uuid4().hex)
        )


@pytest.fixture
async def source(engine: AsyncEngine) -> tuple[uuid.UUID, str]:
    return await create_lead_source(engine, f"source-{uuid.uuid4().hex[:6]}", trusted=False)


async def test_a_revoked_key_is_refused_once_its_ttl_has_passed(
    engine: AsyncEngine, source: tuple[uuid.UUID, str]
) -> None:
    source_id, api_key = source
    clock = Clock()
    keys = SourceKeys(engine, TTL_S, clock=clock)
    assert (await keys.source_for(api_key)) is not None
    await revoke(engine, source_id)
    clock.now += TTL_S
    assert await keys.source_for(api_key) is None


async def test_a_remembered_key_is_not_looked_up_again_within_its_ttl(
    engine: AsyncEngine, source: tuple[uuid.UUID, str]
) -> None:
    source_id, api_key = source
    clock = Clock()
    keys = SourceKeys(engine, TTL_S, clock=clock)
    first = await keys.source_for(api_key)
    await revoke(engine, source_id)
    clock.now += TTL_S - 0.001
    assert await keys.source_for(api_key) == first


async def test_with_no_ttl_a_revoked_key_is_refused_at_the_next_request(
    engine: AsyncEngine, source: tuple[uuid.UUID, str]
) -> None:
    source_id, api_key = source
    keys = SourceKeys(engine, 0)
    assert (await keys.source_for(api_key)) is not None
    await revoke(engine, source_id)
    assert await keys.source_for(api_key) is None


async def test_a_refusal_is_not_remembered_a_key_issued_next_is_taken(engine: AsyncEngine) -> None:
    api_key = new_api_key()
    keys = SourceKeys(engine, TTL_S, clock=Clock())
    assert await keys.source_for(api_key) is None
    async with engine.begin() as connection:
        values = {"name": f"source-{uuid.uuid4().hex[:6]}", "api_key_hash": hash_api_key(api_key), "trusted": False}
        await connection.execute(insert(LeadSource).values(**values))
    assert await keys.source_for(api_key) is not None


async def test_concurrent_requests_with_a_key_not_remembered_share_one_lookup(
    engine: AsyncEngine, source: tuple[uuid.UUID, str]
) -> None:
    source_id, api_key = source
    lookups: list[str] = []

    def count(*_: object, statement: str, **__: object) -> None:
        if "lead_sources" in statement:
            lookups.append(statement)

    keys = SourceKeys(engine, TTL_S, clock=Clock())
    event.listen(engine.sync_engine, "before_cursor_execute", count, named=True)
    try:
        found = await asyncio.gather(*(keys.source_for(api_key) for _ in range(20)))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert {source.id if source else None for source in found} == {source_id}
    assert len(lookups) == 1


async def test_a_request_that_goes_away_does_not_cancel_the_lookup_others_wait_for(
    engine: AsyncEngine, source: tuple[uuid.UUID, str]
) -> None:
    source_id, api_key = source
    keys = SourceKeys(engine, TTL_S, clock=Clock())
    leaving = asyncio.create_task(keys.source_for(api_key))
    staying = asyncio.create_task(keys.source_for(api_key))
    await asyncio.sleep(0)  # both are waiting on the one lookup
    leaving.cancel()
    found = await asyncio.wait_for(staying, timeout=10)
    assert found is not None
    assert found.id == source_id
