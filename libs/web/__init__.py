"""HTTP side of every service: the app factory, health and metrics routes, request context, OpenAPI, the server."""

from libs.web.app import create_app
from libs.web.client import Network, client_address
from libs.web.dependencies import constant
from libs.web.limits import JsonInt, fits_column
from libs.web.middleware import CORRELATION_HEADER, RequestContext, accept_correlation_id
from libs.web.openapi import SCHEMA_CSP, SCHEMA_PATH, Error, document_refusals, error_responses, openapi_config
from libs.web.ops_routes import ops_routes
from libs.web.requests import JsonSafeRequest
from libs.web.security import security_headers
from libs.web.server import run_event_loop, serve, server_config

__all__ = [
    "CORRELATION_HEADER",
    "SCHEMA_CSP",
    "SCHEMA_PATH",
    "Error",
    "JsonInt",
    "JsonSafeRequest",
    "Network",
    "RequestContext",
    "accept_correlation_id",
    "client_address",
    "constant",
    "create_app",
    "document_refusals",
    "error_responses",
    "fits_column",
    "openapi_config",
    "ops_routes",
    "run_event_loop",
    "security_headers",
    "serve",
    "server_config",
]
