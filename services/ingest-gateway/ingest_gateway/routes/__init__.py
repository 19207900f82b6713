"""`/api/v1`: every controller of the gateway, in one router."""

from litestar import Router

from ingest_gateway.routes.auth import AuthController
from ingest_gateway.routes.bad_leads import AssignmentReportsController, BadLeadReportsController
from ingest_gateway.routes.exports import ExportsController
from ingest_gateway.routes.leads import LeadsController
from ingest_gateway.routes.providers import ProvidersController

CONTROLLERS = [
    AuthController,
    LeadsController,
    ProvidersController,
    AssignmentReportsController,
    BadLeadReportsController,
    ExportsController,
]


def api() -> Router:
    return Router("/", route_handlers=CONTROLLERS)
