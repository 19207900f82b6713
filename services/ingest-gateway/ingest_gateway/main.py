"""ingest-gateway wiring: settings -> telemetry -> runtime (database, broker, readiness) -> tokens -> API app."""

from litestar import Litestar

from ingest_gateway.dependencies import build_dependencies
from ingest_gateway.metrics import GatewayMetrics
from ingest_gateway.routes import CONTROLLERS
from ingest_gateway.settings import Settings
from libs.auth import Tokens
from libs.health import Readiness
from libs.runtime import ServiceRuntime, run_service
from libs.telemetry import Telemetry
from libs.web import openapi_config


def build(settings: Settings, telemetry: Telemetry) -> tuple[Litestar, Readiness]:
    runtime = ServiceRuntime.create(settings, telemetry)
    dependencies = build_dependencies(
        settings, runtime.engine, runtime.publisher, Tokens.from_settings(settings), GatewayMetrics.create(telemetry)
    )
    app = runtime.app(
        route_handlers=CONTROLLERS,
        dependencies=dependencies,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config("fmhl ingest-gateway", api_key_header="X-API-Key"),
    )
    return app, runtime.readiness


def main() -> None:
    run_service(Settings, build)
