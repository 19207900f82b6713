"""`/api/v1/admin`: queues, and the dead-letter store to list, group, inspect, retry and resolve.

Every route needs role admin and MFA (`otp` in the token's `amr`): 401 without a valid token, 403 without.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import (
    ClientException,
    HTTPException,
    NotFoundException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.params import Body, FromPath, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_409_CONFLICT, HTTP_503_SERVICE_UNAVAILABLE
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service.queries import Filters, detail, groups, list_page, selected_ids
from dlq_service.queue_stats import QueueStats
from dlq_service.retries import EntryNotFound, EntryNotRetryable, Redriver, create_redrive, retry_entry
from dlq_service.settings import Settings
from libs import audit
from libs.auth import Principal
from libs.db.keyset import BadCursor
from libs.messaging.publisher import Publisher, PublishFailed
from libs.messaging.topology import DLQ_QUEUE, TOPOLOGY
from libs.ratelimit import RateLimiter

Status = Literal["failed", "retrying", "resolved"]
Reason = Literal["error", "rejected", "expired", "maxlen", "delivery_limit"]
MAX_REDRIVE = 100_000


class FilterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: str | None = Field(None, max_length=100)
    reason: Reason | None = None
    error_type: str | None = Field(None, max_length=200)
    fingerprint: str | None = Field(None, max_length=64)
    failed_from: datetime | None = None
    failed_to: datetime | None = None
    q: str | None = Field(None, max_length=200, pattern=r"^[^\x00]*$")

    def filters(self) -> Filters:
        return Filters(self.queue, None, self.reason, self.error_type, self.fingerprint, self.failed_from,
                       self.failed_to, self.q)  # fmt: skip


class GroupSelection(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue: str = Field(max_length=100)
    fingerprint: str = Field(max_length=64)


class BulkRetry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[uuid.UUID] | None = Field(None, max_length=10_000)
    group: GroupSelection | None = None
    filter: FilterBody | None = None
    dry_run: bool = False
    rate_per_second: int | None = Field(None, ge=1, le=10_000)

    @model_validator(mode="after")
    def _one_selection(self) -> BulkRetry:
        if sum(part is not None for part in (self.ids, self.group, self.filter)) != 1:
            raise ValueError("give exactly one of ids, group or filter")
        return self


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None


class Accepted(BaseModel):
    id: uuid.UUID
    status: str


class RedriveStarted(BaseModel):
    redrive_id: uuid.UUID | None
    selected: int
    dry_run: bool
    rate_per_second: int


class QueuesController(Controller):
    path = "/api/v1/admin/queues"
    tags = ["admin: queues and dead letters"]  # noqa: RUF012
    security = [{"bearer": []}]  # noqa: RUF012

    @get("/", raises=[TooManyRequestsException])
    async def queues(
        self,
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        queue_stats: NamedDependency[QueueStats],
        http: NamedDependency[httpx.AsyncClient],
        queues_limiter: NamedDependency[RateLimiter],
    ) -> dict[str, list[dict[str, Any]]]:
        """Each work queue: depth, active, consumers (from the broker), failed_last_hour, dlq_size, oldest age."""
        wait = await queues_limiter.retry_after(principal.subject)
        if wait is not None:
            raise TooManyRequestsException("too many queue overview requests", headers={"Retry-After": str(wait)})
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT queue_name, count(*) FILTER (WHERE last_failed_at > now() - interval '1 hour') AS hour, "
                    "count(*) FILTER (WHERE status <> 'resolved') AS unresolved, "
                    "EXTRACT(EPOCH FROM now() - min(first_failed_at) FILTER (WHERE status <> 'resolved')) AS oldest "
                    "FROM dead_letter_queue GROUP BY queue_name"
                )
            )
            stored = {row.queue_name: row for row in rows}
        result = []
        for name in [queue.name for queue in TOPOLOGY.work_queues] + [DLQ_QUEUE]:
            row = stored.get(name)
            result.append(
                {"name": name, **(await queue_stats.for_queue(http, name)),
                 "failed_last_hour": row.hour if row else 0, "dlq_size": row.unresolved if row else 0,
                 "oldest_unresolved_age_s": round(float(row.oldest), 1) if row and row.oldest is not None else None}
            )  # fmt: skip
        return {"queues": result}

    @get("/dlq")
    async def list_dead_letters(
        self,
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        queue: Annotated[str | None, QueryParameter(max_length=100)] = None,
        status: Annotated[Status | None, QueryParameter()] = None,
        reason: Annotated[Reason | None, QueryParameter()] = None,
        error_type: Annotated[str | None, QueryParameter(max_length=200)] = None,
        fingerprint: Annotated[str | None, QueryParameter(max_length=64)] = None,
        failed_from: Annotated[datetime | None, QueryParameter(name="from")] = None,
        failed_to: Annotated[datetime | None, QueryParameter(name="to")] = None,
        q: Annotated[str | None, QueryParameter(max_length=200, pattern=r"^[^\x00]*$")] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=500)] = None,
    ) -> Page:
        """Newest first; keyset pages stay stable while new failures arrive. Payload contact fields masked."""
        filters = Filters(queue, status, reason, error_type, fingerprint, failed_from, failed_to, q)
        try:
            async with engine.connect() as connection:
                items, next_cursor = await list_page(connection, filters, limit, cursor)
        except BadCursor as error:
            raise ValidationException(str(error), extra=[{"key": "cursor", "message": str(error)}]) from None
        return Page(items=items, next_cursor=next_cursor)

    @get("/dlq/groups")
    async def dead_letter_groups(
        self, principal: NamedDependency[Principal], engine: NamedDependency[AsyncEngine]
    ) -> dict[str, list[dict[str, Any]]]:
        """Unresolved entries grouped by queue and fingerprint (error type, normalised message, top frame)."""
        async with engine.connect() as connection:
            return {"groups": await groups(connection)}

    @get("/dlq/{entry_id:uuid}", raises=[NotFoundException])
    async def dead_letter(
        self, entry_id: FromPath[uuid.UUID], principal: NamedDependency[Principal], engine: NamedDependency[AsyncEngine]
    ) -> dict[str, Any]:
        """Everything captured, unmasked, with every failure and retry. Audited as dlq.entry_viewed."""
        async with engine.begin() as connection:
            entry = await detail(connection, entry_id)
            if entry is None:
                raise NotFoundException(f"dead letter {entry_id} not found")
            await audit.record(
                connection, actor=principal.subject, action="dlq.entry_viewed", entity_type="dead_letter",
                entity_id=str(entry_id),
            )  # fmt: skip
        return entry

    @post("/dlq/{entry_id:uuid}/retry", status_code=HTTP_202_ACCEPTED, raises=[NotFoundException, HTTPException])
    async def retry(
        self,
        entry_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        publisher: NamedDependency[Publisher],
    ) -> Accepted:
        """Republishes the original body and headers (same ids) to the original exchange and routing key.
        409 when the entry is already retrying or resolved, so a double click sends one message."""
        try:
            await retry_entry(engine, publisher, entry_id, principal.subject)
        except EntryNotFound:
            raise NotFoundException(f"dead letter {entry_id} not found") from None
        except EntryNotRetryable as error:
            raise ClientException(status_code=HTTP_409_CONFLICT, detail=str(error)) from None
        except PublishFailed:
            raise HTTPException(
                status_code=HTTP_503_SERVICE_UNAVAILABLE, detail="the broker did not confirm; the entry is unchanged",
                headers={"Retry-After": "5"},
            ) from None  # fmt: skip
        return Accepted(id=entry_id, status="retrying")

    @post("/dlq/retry", status_code=HTTP_202_ACCEPTED)
    async def bulk_retry(
        self,
        data: Annotated[BulkRetry, Body()],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        redriver: NamedDependency[Redriver],
        settings: NamedDependency[Settings],
    ) -> RedriveStarted:
        """Selection fixed now (later failures are not swept in); sent in the background at a bounded rate."""
        rate = min(data.rate_per_second or settings.redrive_default_rate, settings.redrive_max_rate)
        async with engine.connect() as connection:
            if data.ids is not None:
                found = await connection.execute(
                    text(
                        "SELECT id FROM dead_letter_queue WHERE id = ANY(:ids) AND status = 'failed' "
                        "ORDER BY created_at"
                    ),
                    {"ids": data.ids},
                )
                ids = list(found.scalars().all())
            elif data.group is not None:
                ids = await selected_ids(
                    connection, Filters(queue=data.group.queue, fingerprint=data.group.fingerprint), MAX_REDRIVE
                )
            else:
                assert data.filter is not None
                ids = await selected_ids(connection, data.filter.filters(), MAX_REDRIVE)
        if data.dry_run:
            return RedriveStarted(redrive_id=None, selected=len(ids), dry_run=True, rate_per_second=rate)
        selection = data.model_dump(exclude={"dry_run", "rate_per_second"}, exclude_none=True, mode="json")
        redrive_id = await create_redrive(engine, ids, principal.subject, rate, selection)
        redriver.start(redrive_id)
        return RedriveStarted(redrive_id=redrive_id, selected=len(ids), dry_run=False, rate_per_second=rate)

    @get("/dlq/redrives/{redrive_id:uuid}", raises=[NotFoundException])
    async def redrive(
        self,
        redrive_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> dict[str, Any]:
        """Progress: selected, sent, failed, skipped (no longer failed when its turn came), status."""
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text(
                        "SELECT id, status, selected, sent, failed, skipped, rate_per_second, selection, requested_by, "
                        "created_at, finished_at FROM redrives WHERE id = :id"
                    ),
                    {"id": redrive_id},
                )
            ).first()
        if row is None:
            raise NotFoundException(f"redrive {redrive_id} not found")
        return dict(row._mapping)

    @post("/dlq/redrives/{redrive_id:uuid}/cancel", status_code=200, raises=[NotFoundException])
    async def cancel_redrive(
        self,
        redrive_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> dict[str, Any]:
        """Stops before the next message; what was sent stays sent."""
        async with engine.begin() as connection:
            status = await connection.scalar(
                text(
                    "UPDATE redrives SET status = CASE WHEN status = 'running' THEN 'cancelled' ELSE status END, "
                    "finished_at = COALESCE(finished_at, now()) WHERE id = :id RETURNING status"
                ),
                {"id": redrive_id},
            )
            if status is None:
                raise NotFoundException(f"redrive {redrive_id} not found")
            await audit.record(
                connection, actor=principal.subject, action="dlq.redrive_cancelled", entity_type="redrive",
                entity_id=str(redrive_id),
            )  # fmt: skip
        return {"id": redrive_id, "status": status}

    @delete("/dlq/{entry_id:uuid}", status_code=200, raises=[NotFoundException])
    async def resolve(
        self, entry_id: FromPath[uuid.UUID], principal: NamedDependency[Principal], engine: NamedDependency[AsyncEngine]
    ) -> Accepted:
        """Marks resolved (who and when); the row stays until the retention cleanup. Audited dlq.entry_resolved."""
        async with engine.begin() as connection:
            resolved = await connection.scalar(
                text(
                    "UPDATE dead_letter_queue SET status = 'resolved', resolved = TRUE, resolved_at = now(), "
                    "resolved_by = :by, resolution = 'manual' WHERE id = :id AND status <> 'resolved' RETURNING id"
                ),
                {"by": uuid.UUID(principal.subject), "id": entry_id},
            )
            if resolved is None:
                if await connection.scalar(text("SELECT 1 FROM dead_letter_queue WHERE id = :id"), {"id": entry_id}):
                    return Accepted(id=entry_id, status="resolved")
                raise NotFoundException(f"dead letter {entry_id} not found")
            await audit.record(
                connection, actor=principal.subject, action="dlq.entry_resolved", entity_type="dead_letter",
                entity_id=str(entry_id),
            )  # fmt: skip
        return Accepted(id=entry_id, status="resolved")
