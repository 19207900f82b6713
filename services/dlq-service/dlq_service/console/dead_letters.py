"""`/console/dead-letters`: the filtered list, failure groups, one entry (revealed on request), and what an admin
does to entries: retry, resolve with a note, edit and retry, resolve a group. Each action is the domain function
the JSON API calls."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotFoundException
from litestar.params import Body, FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service import edits, group_resolutions, inspection, queries, retries
from dlq_service.console.forms import LIST_FIELDS, LIST_LIMIT, NOTICES, link, list_filters
from dlq_service.edits import CONTRACTS, InvalidEdit
from dlq_service.queries import EntryNotFound
from dlq_service.retries import EntryNotRetryable, NotInTopology
from dlq_service.sessions import SessionUser
from dlq_service.signing import RetrySigner
from libs.db.keyset import BadCursor
from libs.db.tables import DeadLetterReason, DeadLetterStatus
from libs.messaging.publisher import Publisher, PublishFailed

Form = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)]
PROBLEMS = {
    "not-retryable": "Nothing was sent: the entry is already retrying or resolved.",
    "not-in-topology": "Nothing was sent: its queue is not a work queue of the topology. Inspect and resolve it.",
    "publish-failed": "Nothing was sent: the broker did not confirm the message. The entry is unchanged; try again.",
    "confirm": "Tick the box to confirm: every unresolved entry of the group will be resolved.",
}


def params(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {name: request.query_params.get(name) or "" for name in request.query_params}


def field(form: dict[str, Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _entry(entry_id: uuid.UUID, **query: str | None) -> Redirect:
    return Redirect(path=link(f"/console/dead-letters/{entry_id}", **query), status_code=303)


class DeadLettersController(Controller):
    path = "/dead-letters"

    @get("/", name="console:dead-letters")
    async def list_entries(
        self, request: Request[Any, Any, Any], admin: NamedDependency[SessionUser], engine: NamedDependency[AsyncEngine]
    ) -> Template:
        query = params(request)
        filters, parsed = list_filters(query)
        cursor = query.get("cursor") or None
        page, cursor_error = None, None
        try:
            page = await queries.list_page(engine, filters, LIST_LIMIT, cursor)
        except BadCursor as error:
            cursor_error = str(error)
        kept = {name: parsed.values.get(name) for name in LIST_FIELDS}
        return Template(
            template_name="dead_letters.html",
            context={
                "admin": admin, "nav": "dead-letters", "page": page, "filters": kept, "errors": parsed.errors,
                "cursor_error": cursor_error, "statuses": list(DeadLetterStatus), "reasons": list(DeadLetterReason),
                "next_link": link("/console/dead-letters", **kept, cursor=page.next_cursor)
                if page and page.next_cursor else None,
                "first_link": link("/console/dead-letters", **kept) if cursor else None,
                "redrive_link": link("/console/redrives/new", **{k: v for k, v in kept.items() if k != "status"}),
            },
        )  # fmt: skip

    @get("/groups", name="console:groups")
    async def groups(
        self, request: Request[Any, Any, Any], admin: NamedDependency[SessionUser], engine: NamedDependency[AsyncEngine]
    ) -> Template:
        problem = PROBLEMS.get(request.query_params.get("problem") or "")
        return Template(
            template_name="groups.html",
            context={"admin": admin, "nav": "groups", "groups": (await queries.groups(engine)).groups,
                     "notice": NOTICES.get(request.query_params.get("notice") or ""), "problem": problem},
        )  # fmt: skip

    @post("/groups/resolve", name="console:resolve-group")
    async def resolve_group(
        self, data: Form, admin: NamedDependency[SessionUser], engine: NamedDependency[AsyncEngine]
    ) -> Redirect:
        queue = field(data, "queue")
        if not queue or field(data, "confirm") != "yes":
            return Redirect(path=link("/console/dead-letters/groups", problem="confirm"), status_code=303)
        fingerprint = field(data, "fingerprint") or None
        await group_resolutions.resolve_group(engine, queue, fingerprint, admin.subject, field(data, "note"))
        return Redirect(path=link("/console/dead-letters/groups", notice="group-resolved"), status_code=303)

    @get("/{entry_id:uuid}", name="console:entry")
    async def entry(
        self,
        entry_id: FromPath[uuid.UUID],
        request: Request[Any, Any, Any],
        admin: NamedDependency[SessionUser],
        engine: NamedDependency[AsyncEngine],
    ) -> Template:
        """Masked like the list unless `reveal=1`; audited either way, with the flag."""
        reveal = request.query_params.get("reveal") == "1"
        try:
            seen = await inspection.inspect(engine, entry_id, admin.subject, reveal=reveal)
        except EntryNotFound as error:
            raise NotFoundException(str(error)) from None
        return Template(
            template_name="entry.html",
            context={"admin": admin, "nav": "dead-letters", "seen": seen, "entry": seen.entry,
                     "editable": seen.entry.status == DeadLetterStatus.failed and seen.entry.message_type in CONTRACTS,
                     "notice": NOTICES.get(request.query_params.get("notice") or ""),
                     "problem": PROBLEMS.get(request.query_params.get("problem") or "")},
        )  # fmt: skip

    @post("/{entry_id:uuid}/retry", name="console:retry")
    async def retry(
        self,
        entry_id: FromPath[uuid.UUID],
        admin: NamedDependency[SessionUser],
        engine: NamedDependency[AsyncEngine],
        publisher: NamedDependency[Publisher],
        signer: NamedDependency[RetrySigner],
    ) -> Redirect:
        try:
            await retries.retry_entry(engine, publisher, signer, entry_id, admin.subject)
        except EntryNotFound as error:
            raise NotFoundException(str(error)) from None
        except NotInTopology:
            return _entry(entry_id, problem="not-in-topology")
        except EntryNotRetryable:
            return _entry(entry_id, problem="not-retryable")
        except PublishFailed:
            return _entry(entry_id, problem="publish-failed")
        return _entry(entry_id, notice="retried")

    @post("/{entry_id:uuid}/resolve", name="console:resolve")
    async def resolve(
        self,
        entry_id: FromPath[uuid.UUID],
        data: Form,
        admin: NamedDependency[SessionUser],
        engine: NamedDependency[AsyncEngine],
    ) -> Redirect:
        try:
            await group_resolutions.resolve_entry(engine, entry_id, admin.subject, field(data, "note"))
        except EntryNotFound as error:
            raise NotFoundException(str(error)) from None
        return _entry(entry_id, notice="resolved")

    @get("/{entry_id:uuid}/edit", name="console:edit")
    async def edit(
        self, entry_id: FromPath[uuid.UUID], admin: NamedDependency[SessionUser], engine: NamedDependency[AsyncEngine]
    ) -> Template:
        """The editor starts from the body as it is: a look at the payload, audited as revealed."""
        try:
            seen = await inspection.inspect(engine, entry_id, admin.subject, reveal=True)
        except EntryNotFound as error:
            raise NotFoundException(str(error)) from None
        return Template(
            template_name="edit.html",
            context={"admin": admin, "nav": "dead-letters", "entry": seen.entry, "body": seen.body_text,
                     "errors": [], "contract": CONTRACTS.get(seen.entry.message_type or "")},
        )  # fmt: skip

    @post("/{entry_id:uuid}/edit", name="console:edit-and-retry")
    async def edit_and_retry(
        self,
        entry_id: FromPath[uuid.UUID],
        data: Form,
        admin: NamedDependency[SessionUser],
        engine: NamedDependency[AsyncEngine],
        publisher: NamedDependency[Publisher],
        signer: NamedDependency[RetrySigner],
    ) -> Template | Redirect:
        body = field(data, "body")
        try:
            await edits.edit_and_retry(engine, publisher, signer, entry_id, body, admin.subject)
        except EntryNotFound as error:
            raise NotFoundException(str(error)) from None
        except InvalidEdit as invalid:
            seen = await inspection.inspect(engine, entry_id, admin.subject, reveal=True)
            return Template(
                template_name="edit.html", status_code=HTTP_400_BAD_REQUEST,
                context={"admin": admin, "nav": "dead-letters", "entry": seen.entry, "body": body,
                         "errors": invalid.errors, "contract": CONTRACTS.get(seen.entry.message_type or "")},
            )  # fmt: skip
        except NotInTopology:
            return _entry(entry_id, problem="not-in-topology")
        except EntryNotRetryable:
            return _entry(entry_id, problem="not-retryable")
        except PublishFailed:
            return _entry(entry_id, problem="publish-failed")
        return _entry(entry_id, notice="edited")
