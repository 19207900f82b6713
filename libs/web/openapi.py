"""The OpenAPI document of an API service, served at /schema with the security schemes its routes use.

The browsable page at /schema is ours and self-contained: the render plugins Litestar ships load their scripts,
styles and favicon from public CDNs, which a strict Content-Security-Policy refuses and an offline machine cannot
reach. The document itself is at /schema/openapi.json (and .yaml) for any tool that renders it.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Any

from litestar import Request
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, Reference, SecurityScheme

SCHEMA_PATH = "/schema"
BEARER = SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

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


def openapi_config(title: str, *, api_key_header: str | None = None) -> OpenAPIConfig:
    """Bearer JWTs always; an API key scheme (named `apiKey`) when the service accepts one in `api_key_header`."""
    schemes: dict[str, SecurityScheme | Reference] = {"bearer": BEARER}
    if api_key_header is not None:
        schemes["apiKey"] = SecurityScheme(type="apiKey", name=api_key_header, security_scheme_in="header")
    return OpenAPIConfig(
        title=title,
        version="1.0.0",
        path=SCHEMA_PATH,
        components=Components(security_schemes=schemes),
        render_plugins=[SchemaPage(), JsonRenderPlugin(), YamlRenderPlugin(path="/openapi.yaml")],
    )
