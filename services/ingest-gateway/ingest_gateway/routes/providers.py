"""Providers: creation and subscriptions (admin), top-ups (admin), balance and inbox (the provider or an admin)."""

from __future__ import annotations

import time
import uuid
from datetime import date
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import Body, FromPath, FromQuery, QueryParameter
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest_gateway import providers, top_ups
from ingest_gateway.inbox import InboxPage, InboxQuery, inbox_page
from ingest_gateway.metrics import GatewayMetrics
from ingest_gateway.providers import Cents, NewProvider, NewSubscription
from ingest_gateway.routes.errors import as_http
from libs.auth import Principal, require_provider_or_admin
from libs.db.tables import AssignmentStatus
from libs.web import error_responses


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount_cents: Cents


class Created(BaseModel):
    id: uuid.UUID


class Balance(BaseModel):
    provider_id: uuid.UUID
    balance_cents: int


class ProvidersController(Controller):
    path = "/api/v1/providers"
    tags = ["providers"]  # noqa: RUF012
    security = [{"bearer": []}]  # noqa: RUF012

    @post("/", status_code=201)
    async def create_provider(
        self,
        data: Annotated[NewProvider, Body()],
        admin: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> Created:
        return Created(id=await providers.create(engine, data, uuid.UUID(admin.subject)))

    @post("/{provider_id:uuid}/subscriptions", status_code=201, responses=error_responses(409))
    async def create_subscription(
        self,
        provider_id: FromPath[uuid.UUID],
        data: Annotated[NewSubscription, Body()],
        admin: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> Created:
        with as_http():
            return Created(id=await providers.subscribe(engine, provider_id, data, uuid.UUID(admin.subject)))

    @post("/{provider_id:uuid}/top-ups", status_code=201, responses=error_responses(409))
    async def top_up(
        self,
        provider_id: FromPath[uuid.UUID],
        data: Annotated[TopUp, Body()],
        admin: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> Balance:
        with as_http():
            new_balance = await top_ups.add(engine, provider_id, data.amount_cents, uuid.UUID(admin.subject))
        return Balance(provider_id=provider_id, balance_cents=new_balance)

    @get("/{provider_id:uuid}/balance")
    async def balance(
        self,
        provider_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> Balance:
        require_provider_or_admin(principal, provider_id)
        with as_http():
            return Balance(provider_id=provider_id, balance_cents=await providers.balance(engine, provider_id))

    @get("/{provider_id:uuid}/inbox")
    async def inbox(
        self,
        provider_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        metrics: NamedDependency[GatewayMetrics],
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=500)] = None,
        status: FromQuery[AssignmentStatus | None] = None,
        date_from: Annotated[date | None, QueryParameter(name="from")] = None,
        date_to: Annotated[date | None, QueryParameter(name="to")] = None,
    ) -> InboxPage:
        require_provider_or_admin(principal, provider_id)
        query = InboxQuery(provider_id, limit, cursor, status, date_from, date_to)
        started = time.perf_counter()
        with as_http():
            async with engine.connect() as connection:
                page = await inbox_page(connection, query)
        metrics.inbox_query_duration.record((time.perf_counter() - started) * 1000)
        return page
