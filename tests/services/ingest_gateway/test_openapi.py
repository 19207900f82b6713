"""The gateway's OpenAPI document describes every successful answer with a typed schema, down to each field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar

from ingest_gateway.main import build
from ingest_gateway.settings import Settings
from libs.settings import load_settings
from libs.telemetry import setup_telemetry
from tests.conftest import TEST_TOTP_ENCRYPTION_KEY
from tests.contracts.schemas import untyped

Schema = dict[str, Any]


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    # Built, never started: the document needs neither the broker nor the database.
    settings = load_settings(
        Settings,
        database_url="postgresql+asyncpg://fmhl:not-used-by-this-test@127.0.0.1:1/none",
        rabbitmq_url="amqp://fmhl:not-used-by-this-test@127.0.0.1:1/none",
        jwt_secret="a-signing-key-only-this-test-ever-uses-0123",
        totp_encryption_key=TEST_TOTP_ENCRYPTION_KEY,
        export_dir=tmp_path_factory.mktemp("exports"),
    )
    app: Litestar = build(settings, setup_telemetry("ingest-gateway-openapi"))[0]
    return app.openapi_schema.to_schema()


def successes(document: Schema) -> Iterator[tuple[str, Schema]]:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                if status.startswith("2"):
                    yield f"{method.upper()} {path} {status}", response


def test_every_success_response_has_a_typed_schema(document: Schema) -> None:
    problems = []
    for where, response in successes(document):
        contents = response.get("content") or {}
        if not contents:
            problems.append(f"{where}: no content schema")
        for media_type, content in contents.items():
            problems += untyped(content.get("schema", {}), document, f"{where} {media_type}")
    assert problems == []


def test_the_document_lists_every_api_operation(document: Schema) -> None:
    assert len(list(successes(document))) == 16


@pytest.mark.parametrize(
    ("schema", "problems"),
    [
        ({}, ["x: no schema"]),
        ({"type": "object"}, ["x: an object without typed fields"]),
        ({"type": "object", "additionalProperties": {}}, ["x: an object without typed fields"]),
        ({"type": "array", "items": {"type": "object"}}, ["x[]: an object without typed fields"]),
        ({"oneOf": [{"type": "object"}, {"type": "null"}]}, ["x: an object without typed fields"]),
        ({"type": "object", "properties": {"y": {}}}, ["x.y: no schema"]),
        ({"type": "object", "additionalProperties": {"type": "integer"}}, []),
        ({"type": "string", "contentMediaType": "application/octet-stream"}, []),
    ],
    ids=["empty", "bare-object", "any-map", "list-of-bare-objects", "nullable-bare-object", "untyped-field",
         "typed-map", "file"],
)  # fmt: skip
def test_the_walk_flags_untyped_schemas_and_accepts_typed_ones(schema: Schema, problems: list[str]) -> None:
    assert untyped(schema, {}, "x") == problems
