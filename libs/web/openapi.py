"""The OpenAPI document of an API service, served at /schema with the security schemes its routes use.

The browsable page at /schema is ours and self-contained: the render plugins Litestar ships load their scripts,
styles and favicon from public CDNs, which a strict Content-Security-Policy refuses and an offline machine cannot
reach. The document itself is at /schema/openapi.json (and .yaml) for any tool that renders it.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Collection
from html import escape
from typing import Any

from litestar import Request
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
    SecurityScheme,
)
from pydantic import BaseModel

SCHEMA_PATH = "/schema"
BEARER = SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
ERROR_SCHEMA = "Error"
ERROR_DESCRIPTIONS = {
    400: "A parameter or the body is malformed or breaks a rule; `extra` names the fields",
    401: "No credentials, or credentials that are not valid (expired, unknown, wrong signature)",
    403: "Valid credentials without the right to this operation or this resource",
    404: "No such resource (a path parameter of the wrong type matches no route either)",
    409: "The resource's current state does not allow this",
    413: "The request body is larger than the service accepts",
    429: "Too many requests: wait Retry-After seconds",
    503: "A dependency did not confirm and nothing was changed: retry after Retry-After seconds",
}
RETRY_AFTER_STATUSES = frozenset({429, 503})

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;color:#1a1a1a}"
    "table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.3rem .8rem;text-align:left}"
    "code{font-size:.95em}"
)
# The page runs no script and loads nothing: its one inline style is allowed by its hash, everything else refused.
SCHEMA_CSP = (
    "default-src 'none'; "
    f"style-src 'sha256-{base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()}'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class SchemaPage(OpenAPIRenderPlugin):
    """Every operation with its method, path, summary and required credentials, and links to the document."""

    def __init__(self) -> None:
        super().__init__(path="/", favicon="", style="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        info = openapi_schema.get("info", {})
        title = escape(f"{info.get('title', 'API')} {info.get('version', '')}".strip())
        rows = "".join(
            f"<tr><td><code>{escape(method.upper())}</code></td><td><code>{escape(path)}</code></td>"
            f"<td>{escape(str(operation.get('summary') or operation.get('operationId') or ''))}</td>"
            f"<td>{escape(_credentials(operation, openapi_schema))}</td></tr>"
            for path, item in openapi_schema.get("paths", {}).items()
            for method, operation in item.items()
            if method in HTTP_METHODS
        )
        return (
            f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{title}</h1>"
            f'<p>OpenAPI document: <a href="{SCHEMA_PATH}/openapi.json">openapi.json</a>, '
            f'<a href="{SCHEMA_PATH}/openapi.yaml">openapi.yaml</a></p>'
            f"<table><thead><tr><th>method</th><th>path</th><th>summary</th><th>credentials</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></body></html>"
        ).encode()


def _credentials(operation: dict[str, Any], document: dict[str, Any]) -> str:
    requirements = operation.get("security", document.get("security")) or []
    return ", ".join(sorted({name for requirement in requirements for name in requirement})) or "none"


class Error(BaseModel):
    """The body of every refusal: Litestar's exception response."""

    status_code: int
    detail: str
    extra: dict[str, Any] | list[Any] | None = None


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """`responses=error_responses(409, 503)` on a route: the refusals only that route can answer.

    401/403 (secured operations), 400 (parameters or a body), 404 (path parameters) and 413 (a body) are added to
    every operation by `document_refusals`, which also gives each the one error schema and Retry-After.
    """
    return {status: ResponseSpec(data_container=Error, description=ERROR_DESCRIPTIONS[status]) for status in statuses}


def _error_schema() -> Schema:
    return Schema(
        type=OpenAPIType.OBJECT,
        required=["status_code", "detail"],
        properties={
            "status_code": Schema(type=OpenAPIType.INTEGER, minimum=400, maximum=599),
            "detail": Schema(type=OpenAPIType.STRING),
            "extra": Schema(
                one_of=[
                    Schema(type=OpenAPIType.OBJECT, additional_properties=Schema()),
                    Schema(type=OpenAPIType.ARRAY, items=Schema()),
                    Schema(type=OpenAPIType.NULL),
                ]
            ),
        },
        description="Why the request was refused",
    )


def _refusal(status: int) -> OpenAPIResponse:
    headers: dict[str, OpenAPIHeader | Reference] = {}
    if status in RETRY_AFTER_STATUSES:
        headers["Retry-After"] = OpenAPIHeader(
            schema=Schema(type=OpenAPIType.STRING, pattern=r"^[0-9]+$"),
            required=True,
            description="Seconds to wait before retrying",
        )
    return OpenAPIResponse(
        description=ERROR_DESCRIPTIONS.get(status, "Refused"),
        headers=headers or None,
        content={"application/json": OpenAPIMediaType(schema=Reference(f"#/components/schemas/{ERROR_SCHEMA}"))},
    )


def _statuses_every_operation_can_answer(operation: Operation, secured: bool) -> set[int]:
    parameters = [parameter for parameter in operation.parameters or [] if not isinstance(parameter, Reference)]
    statuses: set[int] = set()
    if parameters or operation.request_body is not None:
        statuses.add(400)
    if operation.request_body is not None:
        statuses.add(413)
    if any(parameter.param_in == "path" for parameter in parameters):
        statuses.add(404)
    if secured:
        statuses |= {401, 403}
    return statuses


def document_refusals(document: OpenAPI) -> None:
    """Every operation lists each refusal it can answer with the one typed error body; none promises a 500.

    Litestar documents `raises=[HTTPException]` as a 500, and knows nothing of authentication done in
    dependencies or of the 404 a mistyped path parameter gets, so the document is completed once here. A refusal
    the API declared as reusable (`openapi_config(..., refused_everywhere=...)`) is listed on every operation.
    """
    components = document.components if isinstance(document.components, Components) else None
    if components is None or components.schemas is None:
        return
    components.schemas[ERROR_SCHEMA] = _error_schema()
    everywhere = {int(status) for status in components.responses or {}}
    for path_item in (document.paths or {}).values():
        for method in HTTP_METHODS:
            operation = getattr(path_item, method, None)
            if not isinstance(operation, Operation):
                continue
            security = operation.security if operation.security is not None else document.security
            if not security:
                # Said, not left out: an operation anyone may call (a login) requires no scheme, explicitly.
                operation.security = []
            responses = operation.responses or {}
            refusals = {int(status) for status in responses if int(status) >= 400}
            refusals |= _statuses_every_operation_can_answer(operation, bool(security)) | everywhere
            # The contract is that no request makes the API fail: a 5xx other than 503 is never documented.
            refusals -= {status for status in refusals if status >= 500 and status != 503}
            operation.responses = {
                **{status: _http_dated(response) for status, response in responses.items() if int(status) < 400},
                **{str(status): _refusal(status) for status in sorted(refusals)},
            }


def _http_dated(response: OpenAPIResponse | Reference) -> OpenAPIResponse | Reference:
    """Litestar documents a file's Last-Modified as an ISO date-time; HTTP sends an IMF-fixdate."""
    if isinstance(response, OpenAPIResponse):
        for name, header in (response.headers or {}).items():
            if name.lower() == "last-modified" and isinstance(header, OpenAPIHeader):
                header.schema = Schema(type=OpenAPIType.STRING, description="An HTTP date (IMF-fixdate)")
    return response


def openapi_config(
    title: str, *, api_key_header: str | None = None, refused_everywhere: Collection[int] = ()
) -> OpenAPIConfig:
    """Bearer JWTs always; an API key scheme (named `apiKey`) when the service accepts one in `api_key_header`.

    `refused_everywhere`: refusals any operation can answer, whatever the route, e.g. 503 where the app turns an
    unavailable database into one (declared once as reusable responses, listed on every operation).
    """
    schemes: dict[str, SecurityScheme | Reference] = {"bearer": BEARER}
    if api_key_header is not None:
        schemes["apiKey"] = SecurityScheme(type="apiKey", name=api_key_header, security_scheme_in="header")
    responses: dict[str, OpenAPIResponse | Reference] = {str(status): _refusal(status) for status in refused_everywhere}
    return OpenAPIConfig(
        title=title,
        version="1.0.0",
        path=SCHEMA_PATH,
        components=Components(security_schemes=schemes, responses=responses or None),
        render_plugins=[SchemaPage(), JsonRenderPlugin(), YamlRenderPlugin(path="/openapi.yaml")],
    )
