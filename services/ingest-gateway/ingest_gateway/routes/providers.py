"""Providers: creation and subscriptions (admin), top-ups (admin), balance and inbox (the provider or an admin)."""

from __future__ import annotations

import time
import uuid
from datetime import date
from typing import Annotated, Any, Literal

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import Body, FromPath, FromQuery, QueryParameter
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway.inbox import InboxQuery, inbox_page
from ingest_gateway.metrics import GatewayMetrics
from libs import audit, ledger
from libs.auth import Principal, require_admin, require_provider_or_admin
from libs.contracts import EmailAddress, SafeText, ZipCode
from libs.db.keyset import BadCursor

MAX_CENTS = 10_000_000_00  # ten million dollars: anything above is a typo, not a top-up


class NewProvider(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: SafeText
    email: EmailAddress
    low_balance_threshold_cents: Annotated[int, Field(ge=0, le=MAX_CENTS)] = 0


class NewSubscription(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: SafeText
    zip_codes: Annotated[list[ZipCode], Field(max_length=1000)] = []
    zip_prefix: Annotated[str | None, Field(pattern=r"^[0-9]{1,5}$")] = None
    price_cents: Annotated[int, Field(gt=0, le=MAX_CENTS)]
    daily_cap: Annotated[int | None, Field(gt=0, le=100_000)] = None

    @model_validator(mode="after")
    def _needs_an_area(self) -> NewSubscription:
        if not self.zip_codes and self.zip_prefix is None:
            raise ValueError("zip_codes or zip_prefix is required")
        return self


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_cents: Annotated[int, Field(gt=0, le=MAX_CENTS)]


class Created(BaseModel):
    id: uuid.UUID


class Balance(BaseModel):
    provider_id: FromPath[uuid.UUID]
    balance_cents: int


class InboxPage(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None


class ProvidersController(Controller):
    path = "/api/v1/providers"
    tags = ["providers"]  # noqa: RUF012

    @post("/", status_code=201)
    async def create_provider(
        self,
        data: Annotated[NewProvider, Body()],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> Created:
        require_admin(principal)
        async with engine.begin() as connection:
            provider_id = await connection.scalar(
                text(
                    "INSERT INTO providers (name, email, low_balance_threshold_cents) "
                    "VALUES (:name, :email, :threshold) RETURNING id"
                ),
                {"name": data.name, "email": data.email, "threshold": data.low_balance_threshold_cents},
            )
            await audit.record(
                connection, actor=principal.subject, action="provider.created", entity_type="provider",
                entity_id=str(provider_id),
            )  # fmt: skip
        return Created(id=provider_id)

    @post("/{provider_id:uuid}/subscriptions", status_code=201)
    async def create_subscription(
        self,
        provider_id: FromPath[uuid.UUID],
        data: Annotated[NewSubscription, Body()],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> Created:
        require_admin(principal)
        async with engine.begin() as connection:
            if await connection.scalar(text("SELECT 1 FROM providers WHERE id = :id"), {"id": provider_id}) is None:
                raise NotFoundException(f"provider {provider_id} not found")
            subscription_id = await connection.scalar(
                text(
                    "INSERT INTO subscriptions (provider_id, category, zip_codes, zip_prefix, price_cents, daily_cap) "
                    "VALUES (:provider, :category, :zips, :prefix, :price, :cap) RETURNING id"
                ),
                {
                    "provider": provider_id,
                    "category": data.category,
                    "zips": data.zip_codes,
                    "prefix": data.zip_prefix,
                    "price": data.price_cents,
                    "cap": data.daily_cap,
                },
            )
            await audit.record(
                connection, actor=principal.subject, action="subscription.created", entity_type="subscription",
                entity_id=str(subscription_id), metadata={"provider_id": provider_id, "price_cents": data.price_cents},
            )  # fmt: skip
        return Created(id=subscription_id)

    @post("/{provider_id:uuid}/top-ups", status_code=201)
    async def top_up(
        self,
        provider_id: FromPath[uuid.UUID],
        data: Annotated[TopUp, Body()],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> Balance:
        require_admin(principal)
        async with engine.begin() as connection:
            try:
                new_balance = await ledger.top_up(connection, provider_id, data.amount_cents)
            except ledger.UnknownProvider:
                raise NotFoundException(f"provider {provider_id} not found") from None
            await audit.record(
                connection, actor=principal.subject, action="balance.topped_up", entity_type="provider",
                entity_id=str(provider_id), metadata={"amount_cents": data.amount_cents},
            )  # fmt: skip
        return Balance(provider_id=provider_id, balance_cents=new_balance)

    @get("/{provider_id:uuid}/balance")
    async def balance(
        self,
        provider_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> Balance:
        require_provider_or_admin(principal, provider_id)
        async with engine.connect() as connection:
            try:
                return Balance(provider_id=provider_id, balance_cents=await ledger.balance(connection, provider_id))
            except ledger.UnknownProvider:
                raise NotFoundException(f"provider {provider_id} not found") from None

    @get("/{provider_id:uuid}/inbox")
    async def inbox(
        self,
        provider_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        metrics: NamedDependency[GatewayMetrics],
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=500)] = None,
        status: FromQuery[Literal["delivered", "refunded"] | None] = None,
        date_from: Annotated[date | None, QueryParameter(name="from")] = None,
        date_to: Annotated[date | None, QueryParameter(name="to")] = None,
    ) -> InboxPage:
        require_provider_or_admin(principal, provider_id)
        query = InboxQuery(provider_id, limit, cursor, status, date_from, date_to)
        started = time.perf_counter()
        try:
            async with engine.connect() as connection:
                items, next_cursor = await inbox_page(connection, query)
        except BadCursor as error:
            raise ValidationException(str(error), extra=[{"key": "cursor", "message": str(error)}]) from None
        metrics.inbox_query_duration.record((time.perf_counter() - started) * 1000)
        return InboxPage(items=items, next_cursor=next_cursor)
