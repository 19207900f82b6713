"""The admin API's OpenAPI document gives every successful answer a typed schema, down to each field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dlq_service.main import build
from dlq_service.settings import Settings
from libs.settings import load_settings
from libs.telemetry import setup_telemetry
from tests.contracts.schemas import untyped

Schema = dict[str, Any]


@pytest.fixture(scope="module")
def document() -> Schema:
    # Built, never started: the document needs neither the broker nor the database.
    settings = load_settings(
        Settings,
        database_url="postgresql+asyncpg://fmhl:not-used-by-this-test@127.0.0.1:1/none",
        rabbitmq_url="amqp://fmhl:not-used-by-this-test@127.0.0.1:1/none",
        rabbitmq_management_url="http://fmhl:not-used-by-this-test@127.0.0.1:1",
        jwt_secret="a-signing-key-only-this-test-ever-uses-0123",
        dlq_retry_signing_key="a-retry-signing-key-only-this-test-uses-0123",
    )
    app = build(settings, setup_telemetry("dlq-service-openapi"))[0]
    return app.openapi_schema.to_schema()


def successes(document: Schema) -> Iterator[tuple[str, Schema]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                if status.startswith("2"):
                    yield f"{method.upper()} {path} {status}", response


def test_every_admin_route_is_in_the_document(document: Schema) -> None:
    assert len(list(successes(document))) == 11


def test_every_success_response_has_a_typed_schema(document: Schema) -> None:
    problems = []
    for where, response in successes(document):
        contents = response.get("content") or {}
        if not contents:
            problems.append(f"{where}: no content schema")
        for media_type, content in contents.items():
            problems += untyped(content.get("schema", {}), document, f"{where} {media_type}")
    assert problems == []


def test_the_walk_finds_an_untyped_answer(document: Schema) -> None:
    # The check above is only worth something if it fails on what the API used to answer: a bare dict.
    bare: Schema = {"components": document["components"]}
    assert untyped({"type": "object"}, bare, "GET /") == ["GET /: an object without typed fields"]
    assert untyped({"type": "object", "properties": {"queues": {"type": "array", "items": {}}}}, bare, "GET /") == [
        "GET /.queues[]: no schema"
    ]
