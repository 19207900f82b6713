"""`/console/redrives`: a bulk retry of a group or of a filtered list, counted and sampled by a dry run first;
its live progress (done, failed, remaining, rate, time left) and cancellation; the history of redrives."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service import listing, queries, redrive_history, retries
from dlq_service.console.dead_letters import Form, field, params
from dlq_service.console.forms import LIST_FIELDS, NOTICES, Parsed, link, list_filters, rate
from dlq_service.listing import ListFilters
from dlq_service.redrive_history import pace
from dlq_service.retries import BulkRetry, GroupSelection, RedriveNotFound, Redriver
from dlq_service.sessions import SessionUser
from dlq_service.settings import Settings
from libs.db.keyset import BadCursor
from libs.db.tables import DeadLetterStatus

SAMPLE = 5
HISTORY_LIMIT = 25
REFRESH_S = 1


async def _bulk(
    engine: AsyncEngine, query: dict[str, str], settings: Settings, *, dry_run: bool
) -> tuple[BulkRetry, ListFilters, Parsed]:
    """A group (`group=1` with its queue and fingerprint), or the failed entries the list's filters match."""
    filters, parsed = list_filters(query)
    chosen = rate(query.get("rate"), settings.redrive_default_rate, settings.redrive_max_rate)
    if query.get("group") == "1" and filters.queue:
        group = GroupSelection(queue=filters.queue, fingerprint=filters.fingerprint or "")
        return BulkRetry(group=group, dry_run=dry_run, rate_per_second=chosen), filters, parsed
    return await listing.bulk_retry(engine, filters, dry_run=dry_run, rate_per_second=chosen), filters, parsed


class RedrivesController(Controller):
    path = "/redrives"

    @get("/", name="console:redrives")
    async def history(
        self, request: Request[Any, Any, Any], admin: NamedDependency[SessionUser], engine: NamedDependency[AsyncEngine]
    ) -> Template:
        cursor = request.query_params.get("cursor") or None
        try:
            page = await redrive_history.history(engine, HISTORY_LIMIT, cursor)
        except BadCursor:
            page = await redrive_history.history(engine, HISTORY_LIMIT, None)
        now = datetime.now(UTC)
        return Template(
            template_name="redrives.html",
            context={"admin": admin, "nav": "redrives", "page": page,
                     "paces": {item.id: pace(item, now) for item in page.items},
                     "next_link": link("/console/redrives", cursor=page.next_cursor) if page.next_cursor else None},
        )  # fmt: skip

    @get("/new", name="console:redrive-new")
    async def dry_run(
        self,
        request: Request[Any, Any, Any],
        admin: NamedDependency[SessionUser],
        engine: NamedDependency[AsyncEngine],
        redriver: NamedDependency[Redriver],
        settings: NamedDependency[Settings],
    ) -> Template:
        """What a redrive would send now: how many, and a few of them (masked like the list)."""
        query = params(request)
        bulk, filters, parsed = await _bulk(engine, query, settings, dry_run=True)
        counted = await retries.start_redrive(engine, redriver, bulk, admin.subject, settings)
        sample_filters = dataclasses.replace(filters, status=DeadLetterStatus.failed)
        sample = await queries.list_page(engine, sample_filters, SAMPLE, None)
        kept = {name: parsed.values.get(name) for name in LIST_FIELDS if name != "status"}
        return Template(
            template_name="redrive_new.html",
            context={"admin": admin, "nav": "redrives", "counted": counted, "sample": sample.items,
                     "filters": kept, "errors": parsed.errors, "group": query.get("group") == "1",
                     "max_rate": settings.redrive_max_rate},
        )  # fmt: skip

    @post("/", name="console:redrive-start")
    async def start(
        self,
        data: Form,
        admin: NamedDependency[SessionUser],
        engine: NamedDependency[AsyncEngine],
        redriver: NamedDependency[Redriver],
        settings: NamedDependency[Settings],
    ) -> Redirect:
        form = {name: field(data, name) for name in (*LIST_FIELDS, "group", "rate")}
        bulk, _, _ = await _bulk(engine, form, settings, dry_run=False)
        started = await retries.start_redrive(engine, redriver, bulk, admin.subject, settings)
        return Redirect(path=f"/console/redrives/{started.redrive_id}", status_code=303)

    @get("/{redrive_id:uuid}", name="console:redrive")
    async def redrive(
        self,
        redrive_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        admin: NamedDependency[SessionUser],
        engine: NamedDependency[AsyncEngine],
    ) -> Template:
        context = await self._progress(engine, redrive_id)
        return Template(
            template_name="redrive.html",
            context={"admin": admin, "nav": "redrives", "refresh_s": REFRESH_S,
                     "notice": NOTICES.get(request.query_params.get("notice") or ""), **context},
        )  # fmt: skip

    @get("/{redrive_id:uuid}/progress", name="console:redrive-progress")
    async def progress(
        self, redrive_id: FromPath[uuid.UUID], admin: NamedDependency[SessionUser], engine: NamedDependency[AsyncEngine]
    ) -> Template:
        """The progress block alone, for the page to swap in while the redrive runs."""
        return Template(template_name="_redrive_progress.html", context=await self._progress(engine, redrive_id))

    @post("/{redrive_id:uuid}/cancel", name="console:redrive-cancel")
    async def cancel(
        self, redrive_id: FromPath[uuid.UUID], admin: NamedDependency[SessionUser], engine: NamedDependency[AsyncEngine]
    ) -> Redirect:
        try:
            await retries.cancel_redrive(engine, redrive_id, admin.subject)
        except RedriveNotFound as error:
            raise NotFoundException(str(error)) from None
        return Redirect(path=link(f"/console/redrives/{redrive_id}", notice="cancelled"), status_code=303)

    @staticmethod
    async def _progress(engine: AsyncEngine, redrive_id: uuid.UUID) -> dict[str, Any]:
        try:
            progress = await retries.redrive_progress(engine, redrive_id)
        except RedriveNotFound as error:
            raise NotFoundException(str(error)) from None
        return {"progress": progress, "pace": pace(progress, datetime.now(UTC))}
