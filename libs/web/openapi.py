"""The OpenAPI document of an API service, served at /schema with the security schemes its routes use."""

from __future__ import annotations

from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, Reference, SecurityScheme

BEARER = SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")


def openapi_config(title: str, *, api_key_header: str | None = None) -> OpenAPIConfig:
    """Bearer JWTs always; an API key scheme (named `apiKey`) when the service accepts one in `api_key_header`."""
    schemes: dict[str, SecurityScheme | Reference] = {"bearer": BEARER}
    if api_key_header is not None:
        schemes["apiKey"] = SecurityScheme(type="apiKey", name=api_key_header, security_scheme_in="header")
    return OpenAPIConfig(title=title, version="1.0.0", path="/schema", components=Components(security_schemes=schemes))
