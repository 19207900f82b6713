"""The HTTP side every service shares: correlation ids it accepts, and the OpenAPI security schemes it publishes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from litestar import Litestar

from libs.web import SCHEMA_CSP, SCHEMA_PATH, accept_correlation_id, openapi_config, security_headers


def test_a_sane_correlation_id_from_the_caller_is_kept() -> None:
    assert accept_correlation_id("demo-1a2b:step.3") == "demo-1a2b:step.3"


@pytest.mark.parametrize("value", [None, "", "has space", "line\nbreak", "x" * 129, "<script>"])
def test_anything_else_gets_a_fresh_uuid(value: str | None) -> None:
    replaced = accept_correlation_id(value)
    assert replaced != value
    assert uuid.UUID(replaced)


def published_schemes(title: str, api_key_header: str | None = None) -> dict[str, Any]:
    """The security schemes of the OpenAPI document an app with this configuration serves."""
    app = Litestar(route_handlers=[], openapi_config=openapi_config(title, api_key_header=api_key_header))
    document = app.openapi_schema.to_schema()
    assert document["info"]["title"] == title
    return dict(document["components"]["securitySchemes"])


def test_an_admin_api_publishes_the_bearer_scheme_only() -> None:
    assert published_schemes("fmhl scheduler admin API") == {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }


def test_an_api_taking_keys_publishes_the_key_header_beside_the_bearer_scheme() -> None:
    schemes = published_schemes("fmhl ingest-gateway", api_key_header="X-API-Key")
    assert set(schemes) == {"bearer", "apiKey"}
    assert schemes["apiKey"] == {"type": "apiKey", "name": "X-API-Key", "in": "header"}


def request_to(path: str) -> Any:
    return {"type": "http", "path": path}


async def test_a_routes_own_security_headers_give_way_and_its_own_caching_is_kept() -> None:
    message: Any = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"X-Content-Type-Options", b"sniff-away"), (b"cache-control", b"private, max-age=60")],
    }
    await security_headers(message, request_to("/api/v1/leads"))
    assert message["headers"] == [
        (b"cache-control", b"private, max-age=60"),
        (b"x-content-type-options", b"nosniff"),
    ]


async def test_an_api_answer_without_caching_is_no_store_and_the_schema_gets_its_policy() -> None:
    api: Any = {"type": "http.response.start", "status": 200, "headers": []}
    await security_headers(api, request_to("/api/v1/leads"))
    schema: Any = {"type": "http.response.start", "status": 200, "headers": []}
    await security_headers(schema, request_to(SCHEMA_PATH))
    assert dict(api["headers"]) == {b"x-content-type-options": b"nosniff", b"cache-control": b"no-store"}
    assert dict(schema["headers"]) == {b"x-content-type-options": b"nosniff",
                                       b"content-security-policy": SCHEMA_CSP.encode()}  # fmt: skip
