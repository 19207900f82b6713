"""`/console/audit`: who did what and when, filtered by actor, action and entity, each entity linked to its page."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service import audit_trail
from dlq_service.console.dead_letters import params
from dlq_service.console.forms import AUDIT_FIELDS, audit_filters, entity_link, link
from dlq_service.sessions import SessionUser
from libs.db.keyset import BadCursor

LIMIT = 50


class AuditController(Controller):
    path = "/audit"

    @get("/", name="console:audit")
    async def audit(
        self, request: Request[Any, Any, Any], admin: NamedDependency[SessionUser], engine: NamedDependency[AsyncEngine]
    ) -> Template:
        query = params(request)
        filters, parsed = audit_filters(query)
        try:
            page = await audit_trail.page(engine, filters, LIMIT, query.get("cursor") or None)
        except BadCursor as error:
            parsed.errors["cursor"] = str(error)
            page = await audit_trail.page(engine, filters, LIMIT, None)
        kept = {name: parsed.values.get(name) for name in AUDIT_FIELDS}
        next_link = link("/console/audit", **kept, cursor=page.next_cursor) if page.next_cursor else None
        return Template(
            template_name="audit.html",
            context={"admin": admin, "nav": "audit", "page": page, "filters": kept, "errors": parsed.errors,
                     "entity_link": entity_link, "filter_link": lambda **given: link("/console/audit", **given),
                     "next_link": next_link},
        )  # fmt: skip
