"""Response headers every service sends: no MIME sniffing, no caching of API data, a strict policy on /schema."""

from __future__ import annotations

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

from libs.web.openapi import SCHEMA_CSP, SCHEMA_PATH

API_PREFIX = "/api/"


async def security_headers(message: Message, scope: Scope) -> None:
    """A `before_send` hook: it sees every response, including Litestar's own 404 for an unknown path.

    Everything under /api/ is a token or one caller's (or an admin's) data: no browser or proxy may keep it.
    """
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    headers["x-content-type-options"] = "nosniff"
    path = scope["path"]
    if path.startswith(API_PREFIX) and "cache-control" not in headers:
        headers["cache-control"] = "no-store"
    if path == SCHEMA_PATH or path.startswith(SCHEMA_PATH + "/"):
        headers["content-security-policy"] = SCHEMA_CSP
