"""Response headers every service sends: no MIME sniffing, no caching of API data, a strict policy on /schema."""

from __future__ import annotations

from litestar.types import Message, Scope

from libs.web.openapi import SCHEMA_CSP, SCHEMA_PATH

API_PREFIX = "/api/"


_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_STORE = (b"cache-control", b"no-store")
_SCHEMA_POLICY = (b"content-security-policy", SCHEMA_CSP.encode("latin-1"))


async def security_headers(message: Message, scope: Scope) -> None:
    """A `before_send` hook: it sees every response, including Litestar's own 404 for an unknown path.

    Everything under /api/ is a token or one caller's (or an admin's) data: no browser or proxy may keep it.
    The headers are edited as the list of byte pairs they are (this runs for every response)."""
    if message["type"] != "http.response.start":
        return
    path = scope["path"]
    schema = path == SCHEMA_PATH or path.startswith(SCHEMA_PATH + "/")
    headers = list(message.get("headers", ()))
    names = {name.lower() for name, _ in headers}
    replaced = {_NOSNIFF[0], _SCHEMA_POLICY[0]} if schema else {_NOSNIFF[0]}
    if not names.isdisjoint(replaced):  # a route set them itself: ours replace them
        headers = [(name, value) for name, value in headers if name.lower() not in replaced]
    headers.append(_NOSNIFF)
    if path.startswith(API_PREFIX) and _NO_STORE[0] not in names:
        headers.append(_NO_STORE)
    if schema:
        headers.append(_SCHEMA_POLICY)
    message["headers"] = headers
