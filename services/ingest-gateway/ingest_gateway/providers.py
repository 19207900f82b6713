"""Providers and what they buy: an admin creates a provider and its subscriptions; a provider reads its balance."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from ingest_gateway.errors import NotFound
from libs import audit, ledger
from libs.contracts import EmailAddress, SafeText, ZipCode
from libs.db.tables import Provider, Subscription
from libs.web import JsonInt, fits_column

MAX_CENTS = 10_000_000_00  # ten million dollars: anything above is a typo, not a price or a top-up
# JSON `true`, `1.0` or `"100"` is not 100 cents but a client's mistake, refused with 400.
Cents = Annotated[JsonInt, Field(gt=0, le=MAX_CENTS)]


class NewProvider(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[SafeText, fits_column(Provider.name)]
    email: Annotated[EmailAddress, fits_column(Provider.email)]
    low_balance_threshold_cents: Annotated[JsonInt, Field(ge=0, le=MAX_CENTS)] = 0


class NewSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: Annotated[SafeText, fits_column(Subscription.category)]
    zip_codes: Annotated[list[ZipCode], Field(max_length=1000)] = []
    zip_prefix: Annotated[str | None, Field(pattern=r"^[0-9]{1,5}$")] = None
    price_cents: Cents
    daily_cap: Annotated[JsonInt | None, Field(gt=0, le=100_000)] = None

    @model_validator(mode="after")
    def _needs_an_area(self) -> NewSubscription:
        if not self.zip_codes and self.zip_prefix is None:
            raise ValueError("zip_codes or zip_prefix is required")
        return self


async def create(engine: AsyncEngine, provider: NewProvider, actor: uuid.UUID) -> uuid.UUID:
    async with engine.begin() as connection:
        provider_id = (
            await connection.execute(insert(Provider).returning(col(Provider.id)), provider.model_dump())
        ).scalar_one()
        await audit.record(
            connection, actor=str(actor), action="provider.created", entity_type="provider",
            entity_id=str(provider_id),
        )  # fmt: skip
    return provider_id


async def subscribe(
    engine: AsyncEngine, provider_id: uuid.UUID, subscription: NewSubscription, actor: uuid.UUID
) -> uuid.UUID:
    """The new subscription's id; it is active at once."""
    async with engine.begin() as connection:
        if await connection.scalar(select(col(Provider.id)).where(col(Provider.id) == provider_id)) is None:
            raise NotFound(f"provider {provider_id} not found")
        subscription_id = (
            await connection.execute(
                insert(Subscription).returning(col(Subscription.id)),
                {"provider_id": provider_id, **subscription.model_dump()},
            )
        ).scalar_one()
        await audit.record(
            connection, actor=str(actor), action="subscription.created", entity_type="subscription",
            entity_id=str(subscription_id),
            metadata={"provider_id": provider_id, "price_cents": subscription.price_cents},
        )  # fmt: skip
    return subscription_id


async def balance(engine: AsyncEngine, provider_id: uuid.UUID) -> int:
    async with engine.connect() as connection:
        try:
            return await ledger.balance(connection, provider_id)
        except ledger.UnknownProvider:
            raise NotFound(f"provider {provider_id} not found") from None
