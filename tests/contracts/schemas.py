"""The walk every OpenAPI test shares: where a schema says nothing about the value it describes."""

from __future__ import annotations

from typing import Any

Document = dict[str, Any]
DESCRIBED = {"type", "oneOf", "anyOf", "allOf", "enum", "const", "$ref"}
JSON_VALUE = {"array", "object", "string", "boolean", "integer", "number", "null"}
"""What Litestar documents a field typed `Any` as: any JSON value, said on purpose (a dead letter's payload)."""


def untyped(schema: Document, document: Document, where: str, seen: frozenset[str] = frozenset()) -> list[str]:
    """Every place under `schema` that says nothing about its value: `{}`, or an object without typed fields;
    an explicit "any JSON value" counts as said."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        if name in seen:
            return []
        return untyped(document["components"]["schemas"][name], document, f"{where} -> {name}", seen | {name})
    if not schema.keys() & DESCRIBED:
        return [f"{where}: no schema"]
    options = schema.get("oneOf", []) + schema.get("anyOf", [])
    if {option.get("type") for option in options} == JSON_VALUE:
        return []
    found = [problem for option in options + schema.get("allOf", [])
             for problem in untyped(option, document, where, seen)]  # fmt: skip
    if schema.get("type") == "object":
        fields, values = schema.get("properties", {}), schema.get("additionalProperties")
        if not fields and not (isinstance(values, dict) and values):
            found.append(f"{where}: an object without typed fields")
        for name, field in fields.items():
            found += untyped(field, document, f"{where}.{name}", seen)
        if isinstance(values, dict) and values:
            found += untyped(values, document, f"{where}[*]", seen)
    if schema.get("type") == "array":
        found += untyped(schema.get("items", {}), document, f"{where}[]", seen)
    return found
