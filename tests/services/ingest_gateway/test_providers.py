"""Providers: a subscription needs an existing provider; a balance is read for an existing one."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway import providers
from ingest_gateway.errors import NotFound
from ingest_gateway.providers import NewSubscription


def test_a_subscription_needs_zip_codes_or_a_zip_prefix() -> None:
    with pytest.raises(ValidationError, match="zip_codes or zip_prefix is required"):
        NewSubscription(category="roofing", price_cents=100)
    assert NewSubscription(category="roofing", zip_prefix="941", price_cents=100).zip_codes == []


async def test_subscribing_an_unknown_provider_is_not_found(engine: AsyncEngine, admin: uuid.UUID) -> None:
    subscription = NewSubscription(category="roofing", zip_codes=["94107"], price_cents=100)
    with pytest.raises(NotFound):
        await providers.subscribe(engine, uuid.uuid4(), subscription, admin)


async def test_the_balance_of_an_unknown_provider_is_not_found(engine: AsyncEngine) -> None:
    with pytest.raises(NotFound):
        await providers.balance(engine, uuid.uuid4())
