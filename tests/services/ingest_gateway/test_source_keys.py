"""Lead sources' API keys as each gateway process remembers them: a revoked key is refused within the TTL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import insert, update
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
