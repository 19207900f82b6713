"""`/api/v1/admin/queues`: queues, and the dead-letter store to list, group, inspect, retry and resolve.

Every route needs role admin and MFA (`otp` in the token's `amr`): 401 without a valid token, 403 without.
Routes translate HTTP to one domain call and back; the rules and the SQL live in the modules they call.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

import httpx
from litestar import Controller, MediaType, Request, Response, delete, get, post
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
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service import queries, queues, resolutions, retries
from dlq_service.parking import ParkedMessages, Parking, Recapture, Recaptured, audit_recapture
from dlq_service.queries import (
    DeadLetterDetail,
    DeadLetterGroups,
    DeadLetterPage,
    EntryNotFound,
    EntryState,
    Filters,
    utc_time,
)
from dlq_service.queue_stats import QueueStats
from dlq_service.queues import QueuesOverview
from dlq_service.retries import (
    BulkRetry,
    EntryNotRetryable,
    RedriveNotFound,
    RedriveProgress,
    Redriver,
    RedriveStarted,
    RedriveState,
)
from dlq_service.settings import Settings
from dlq_service.signing import RetrySigner
from libs.auth import Principal
from libs.db.keyset import BadCursor
from libs.db.tables import DeadLetterReason, DeadLetterStatus
from libs.messaging.publisher import Publisher, PublishFailed
from libs.ratelimit import RateLimiter
from libs.web import error_responses

NO_NUL = r"^[^\x00]*$"
"""PostgreSQL text cannot hold NUL: a value with one is a 400, not a failed statement."""


SEARCH = (
    "Free text: up to ten words separated by spaces, every one of which an entry must have, in its error message "
    "or among its payload's string and number values (not the keys), as a whole word, case-insensitively: "
    "`deadlock` does not find `deadlocked`; an email address, a host name or a hyphenated word is one word "
    "(`ada@example.com` does not find `bada@example.com`). When no entry of the filtered list has the words whole, "
    "they are searched as substrings instead, of the error message and the payload's JSON text (keys included), "
    "so `ada@exam` or `unavail` still find what contains them; a search's later pages keep its first page's "
    "meaning."
)

# Litestar reads a bare number as a Unix timestamp; the API documents RFC 3339 date-times, so a number is a 400.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _time(name: str, value: datetime | None, raw: str | None = None) -> datetime | None:
    if raw is not None and _NUMBER.fullmatch(raw.strip()):
        message = "must be an RFC 3339 date-time, not a number"
        raise ValidationException(f"{name} {message}", extra=[{"key": name, "message": message}])
    try:
        return utc_time(value)
    except ValueError as error:
        raise ValidationException(f"{name} {error}", extra=[{"key": name, "message": str(error)}]) from None


def _json(body: bytes) -> Response[Any]:
    """A read model's JSON written by the domain module (queries.as_json); the route's annotation names the model
    for the OpenAPI document."""
    return Response(content=body, media_type=MediaType.JSON)


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
    ) -> QueuesOverview:
        """Each work queue: depth, active, consumers (from the broker), failed_last_hour, dlq_size, oldest age."""
        wait = await queues_limiter.retry_after(principal.subject)
        if wait is not None:
            raise TooManyRequestsException("too many queue overview requests", headers={"Retry-After": str(wait)})
        return await queues.overview(engine, queue_stats, http)

    @get("/dlq")
    async def list_dead_letters(
        self,
        request: Request[Any, Any, Any],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        queue: Annotated[str | None, QueryParameter(max_length=100, pattern=NO_NUL)] = None,
        status: Annotated[DeadLetterStatus | None, QueryParameter()] = None,
        reason: Annotated[DeadLetterReason | None, QueryParameter()] = None,
        error_type: Annotated[str | None, QueryParameter(max_length=200, pattern=NO_NUL)] = None,
        fingerprint: Annotated[str | None, QueryParameter(max_length=64, pattern=NO_NUL)] = None,
        failed_from: Annotated[datetime | None, QueryParameter(name="from")] = None,
        failed_to: Annotated[datetime | None, QueryParameter(name="to")] = None,
        q: Annotated[str | None, QueryParameter(max_length=200, pattern=NO_NUL, description=SEARCH)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=500)] = None,
    ) -> Response[DeadLetterPage]:
        """Newest first; keyset pages stay stable while new failures arrive. Every text masked where it looks like
        an email address or phone number; the payload only as a bounded, masked preview."""
        filters = Filters(queue=queue, status=status, reason=reason, error_type=error_type, fingerprint=fingerprint,
                          failed_from=_time("from", failed_from, request.query_params.get("from")),
                          failed_to=_time("to", failed_to, request.query_params.get("to")), text=q)  # fmt: skip
        try:
            return _json((await queries.listed_page(engine, filters, limit, cursor)).json())
        except BadCursor as error:
            raise ValidationException(str(error), extra=[{"key": "cursor", "message": str(error)}]) from None

    @get("/dlq/groups")
    async def dead_letter_groups(
        self, principal: NamedDependency[Principal], engine: NamedDependency[AsyncEngine]
    ) -> Response[DeadLetterGroups]:
        """Unresolved entries grouped by queue and fingerprint (error type, normalised message, top frame)."""
        return _json(queries.as_json(await queries.group_fields(engine)))

    @get("/dlq/{entry_id:uuid}", raises=[NotFoundException])
    async def dead_letter(
        self, entry_id: FromPath[uuid.UUID], principal: NamedDependency[Principal], engine: NamedDependency[AsyncEngine]
    ) -> DeadLetterDetail:
        """Everything captured, unmasked, with every failure and retry. Audited as dlq.entry_viewed."""
        try:
            return await queries.view(engine, entry_id, principal.subject)
        except EntryNotFound as error:
            raise NotFoundException(str(error)) from None

    @post(
        "/dlq/{entry_id:uuid}/retry",
        status_code=HTTP_202_ACCEPTED,
        raises=[NotFoundException, HTTPException],
        responses=error_responses(409, 503),
    )
    async def retry(
        self,
        entry_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        publisher: NamedDependency[Publisher],
        signer: NamedDependency[RetrySigner],
    ) -> EntryState:
        """Republishes the original body and headers (same ids) to the queue it failed in, as the topology reaches
        it, marked with a signed retry. 409 when the entry is already retrying or resolved (a double click sends
        one message), or when its queue is not in the topology (inspect and resolve it instead)."""
        try:
            return await retries.retry_entry(engine, publisher, signer, entry_id, principal.subject)
        except EntryNotFound as error:
            raise NotFoundException(str(error)) from None
        except EntryNotRetryable as error:
            raise ClientException(status_code=HTTP_409_CONFLICT, detail=str(error)) from None
        except PublishFailed:
            raise HTTPException(
                status_code=HTTP_503_SERVICE_UNAVAILABLE, detail="the broker did not confirm; the entry is unchanged",
                headers={"Retry-After": "5"},
            ) from None  # fmt: skip

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
        return await retries.start_redrive(engine, redriver, data, principal.subject, settings)

    @get("/dlq/redrives/{redrive_id:uuid}", raises=[NotFoundException])
    async def redrive(
        self,
        redrive_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> RedriveProgress:
        """Progress: selected, sent, failed, skipped (no longer failed when its turn came), status."""
        try:
            return await retries.redrive_progress(engine, redrive_id)
        except RedriveNotFound as error:
            raise NotFoundException(str(error)) from None

    @post("/dlq/redrives/{redrive_id:uuid}/cancel", status_code=200, raises=[NotFoundException])
    async def cancel_redrive(
        self,
        redrive_id: FromPath[uuid.UUID],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
    ) -> RedriveState:
        """Stops before the next message; what was sent stays sent."""
        try:
            return await retries.cancel_redrive(engine, redrive_id, principal.subject)
        except RedriveNotFound as error:
            raise NotFoundException(str(error)) from None

    @get("/dlq/parked")
    async def parked(
        self,
        principal: NamedDependency[Principal],
        parking: NamedDependency[Parking],
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    ) -> ParkedMessages:
        """Dead letters PostgreSQL kept refusing, in `dlq.parking` with the error: how many, and up to `limit` of
        them, masked like the list."""
        return await parking.peek(limit)

    @post(
        "/dlq/parked/recapture", status_code=HTTP_202_ACCEPTED, raises=[HTTPException], responses=error_responses(503)
    )
    async def recapture_parked(
        self,
        data: Annotated[Recapture, Body()],
        principal: NamedDependency[Principal],
        engine: NamedDependency[AsyncEngine],
        parking: NamedDependency[Parking],
    ) -> Recaptured:
        """Once the cause is fixed: sends up to `limit` parked messages back to `dlq` to be recorded (a message
        still refused is parked again). Audited as dlq.parked_recaptured."""
        try:
            sent = await parking.recapture(data.limit)
        except PublishFailed:
            raise HTTPException(
                status_code=HTTP_503_SERVICE_UNAVAILABLE, detail="the broker did not confirm; the rest stays parked",
                headers={"Retry-After": "5"},
            ) from None  # fmt: skip
        await audit_recapture(engine, principal.subject, sent)
        return sent

    @delete("/dlq/{entry_id:uuid}", status_code=200, raises=[NotFoundException])
    async def resolve(
        self, entry_id: FromPath[uuid.UUID], principal: NamedDependency[Principal], engine: NamedDependency[AsyncEngine]
    ) -> EntryState:
        """Marks resolved (who and when); the row stays until the retention cleanup. Audited dlq.entry_resolved."""
        try:
            return await resolutions.resolve_by_hand(engine, entry_id, principal.subject)
        except EntryNotFound as error:
            raise NotFoundException(str(error)) from None
