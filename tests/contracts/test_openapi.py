"""The HTTP contracts: every operation of the three APIs says which credentials it takes, lists each refusal it
can answer (one typed error body, Retry-After where waiting helps) and describes every answer with a schema."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from litestar import Litestar, get, post
from litestar.params import FromPath, JSONBody

from libs.web import document_refusals, openapi_config
from tests.contracts.render import load_renderer
from tests.contracts.schemas import JSON_VALUE, untyped

Document = dict[str, Any]
METHODS = ("get", "put", "post", "delete", "patch")
PUBLIC = {("ingest-gateway", "POST /api/v1/auth/token")}
"""Called without credentials: the login that hands them out."""


@pytest.fixture(scope="module")
def documents() -> dict[str, Document]:
    renderer: ModuleType = load_renderer()
    return dict(renderer.openapi_documents())


def each_operation(documents: dict[str, Document]) -> Iterator[tuple[str, str, Document, Document]]:
    for service, document in documents.items():
        for path, item in document["paths"].items():
            for method in METHODS:
                if method in item:
                    yield service, f"{method.upper()} {path}", item[method], document


def test_the_three_apis_are_documented(documents: dict[str, Document]) -> None:
    assert sorted(documents) == ["dlq-service", "ingest-gateway", "scheduler"]


def test_every_operation_names_a_declared_security_scheme_or_is_the_login(documents: dict[str, Document]) -> None:
    public, undeclared = set(), []
    for service, operation_id, operation, document in each_operation(documents):
        schemes = document["components"]["securitySchemes"]
        requirements = operation["security"]
        if not requirements:
            public.add((service, operation_id))
        undeclared += [f"{service} {operation_id}: {name}" for item in requirements for name in item
                       if name not in schemes]  # fmt: skip
    assert (public, undeclared) == (PUBLIC, [])


def test_every_refusal_an_operation_can_answer_is_listed(documents: dict[str, Document]) -> None:
    missing = []
    for service, operation_id, operation, _ in each_operation(documents):
        parameters = operation.get("parameters", [])
        expected = set()
        if operation["security"]:
            expected |= {"401", "403"}
        if any(parameter["in"] == "path" for parameter in parameters):
            expected |= {"400", "404"}
        if "requestBody" in operation:
            expected |= {"400", "413"}
        missing += [
            f"{service} {operation_id}: {status}" for status in sorted(expected - operation["responses"].keys())
        ]
    assert missing == []


def test_a_refusal_is_the_typed_error_with_retry_after_where_waiting_helps(documents: dict[str, Document]) -> None:
    problems = []
    for service, operation_id, operation, _ in each_operation(documents):
        for status, response in operation["responses"].items():
            where = f"{service} {operation_id} {status}"
            if int(status) >= 500 and status != "503":
                problems.append(f"{where}: a server error is documented")
            if int(status) < 400:
                continue
            if response["content"]["application/json"]["schema"] != {"$ref": "#/components/schemas/Error"}:
                problems.append(f"{where}: not the Error body")
            if status in {"429", "503"} and not response.get("headers", {}).get("Retry-After", {}).get("required"):
                problems.append(f"{where}: no Retry-After")
    assert problems == []


def test_the_documents_show_conflicts_rate_limits_and_unavailability_where_the_code_raises_them(
    documents: dict[str, Document],
) -> None:
    statuses = {status for _, _, operation, _ in each_operation(documents) for status in operation["responses"]}
    assert {"401", "403", "404", "409", "413", "429", "503"} <= statuses


@pytest.mark.parametrize("service", ["ingest-gateway", "dlq-service", "scheduler"])
def test_every_successful_answer_has_a_typed_schema(service: str, documents: dict[str, Document]) -> None:
    problems = []
    for _, operation_id, operation, document in each_operation({service: documents[service]}):
        for status, response in operation["responses"].items():
            if status.startswith("2"):
                contents = response.get("content") or {}
                if not contents:
                    problems.append(f"{operation_id} {status}: no content schema")
                for media_type, content in contents.items():
                    problems += untyped(content.get("schema", {}), document, f"{operation_id} {status} {media_type}")
    assert problems == []


@pytest.mark.parametrize(
    ("schema", "problems"),
    [
        ({}, ["x: no schema"]),
        ({"type": "object"}, ["x: an object without typed fields"]),
        ({"type": "array", "items": {"type": "object"}}, ["x[]: an object without typed fields"]),
        ({"type": "object", "properties": {"y": {}}}, ["x.y: no schema"]),
        ({"oneOf": [{"type": "object"}, {"type": "null"}]}, ["x: an object without typed fields"]),
        ({"oneOf": [{"type": kind} for kind in sorted(JSON_VALUE)]}, []),
        ({"type": "object", "additionalProperties": {"type": "integer"}}, []),
    ],
    ids=["empty", "bare-object", "list-of-bare-objects", "untyped-field", "nullable-bare-object", "any-json-value",
         "typed-map"],
)  # fmt: skip
def test_the_walk_flags_untyped_schemas_and_accepts_typed_ones(schema: Document, problems: list[str]) -> None:
    assert untyped(schema, {}, "x") == problems


def test_a_refusal_the_api_declares_for_every_operation_is_listed_on_each() -> None:
    @get("/things/{thing_id:int}", sync_to_thread=False)
    def thing(thing_id: FromPath[int]) -> dict[str, int]:
        return {"id": thing_id}

    @post("/things", sync_to_thread=False)
    def add_thing(data: JSONBody[dict[str, int]]) -> dict[str, int]:
        return data

    app = Litestar([thing, add_thing], openapi_config=openapi_config("things", refused_everywhere=(503,)))
    document_refusals(app.openapi_schema)
    document = app.openapi_schema.to_schema()

    for operation in (document["paths"]["/things/{thing_id}"]["get"], document["paths"]["/things"]["post"]):
        unavailable = operation["responses"]["503"]
        assert unavailable["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        assert unavailable["headers"]["Retry-After"]["required"] is True
