"""HTTP side of every service: the app factory, health and metrics routes, request context, OpenAPI, the server."""

from libs.web.app import create_app
from libs.web.dependencies import constant
from libs.web.middleware import CORRELATION_HEADER, RequestContext, accept_correlation_id
from libs.web.openapi import openapi_config
from libs.web.ops_routes import ops_routes
from libs.web.server import serve

__all__ = [
    "CORRELATION_HEADER",
    "RequestContext",
    "accept_correlation_id",
    "constant",
    "create_app",
    "openapi_config",
    "ops_routes",
    "serve",
]
