"""ingest-gateway wiring: settings -> telemetry -> runtime (database, broker, readiness) -> tokens -> API app."""

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from ingest_gateway.dependencies import build_dependencies
from ingest_gateway.metrics import GatewayMetrics
from ingest_gateway.routes import CONTROLLERS
from ingest_gateway.settings import Settings
from libs.auth import Tokens
from libs.health import Readiness
from libs.runtime import ServiceRuntime, run_service
from libs.telemetry import Telemetry

OPENAPI = OpenAPIConfig(
    title="fmhl ingest-gateway",
    version="1.0.0",
    path="/schema",
    components=Components(
        security_schemes={
            "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
            "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
        }
    ),
)


def build(settings: Settings, telemetry: Telemetry) -> tuple[Litestar, Readiness]:
    runtime = ServiceRuntime.create(settings, telemetry)
    tokens = Tokens(
        settings.jwt_secret.get_secret_value(), settings.jwt_issuer, settings.jwt_audience, settings.token_ttl_s
    )
    dependencies = build_dependencies(
        settings, runtime.engine, runtime.publisher, tokens, GatewayMetrics.create(telemetry)
    )
    app = runtime.app(
        route_handlers=CONTROLLERS,
        dependencies=dependencies,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OPENAPI,
    )
    return app, runtime.readiness


def main() -> None:
    run_service(Settings, build)
