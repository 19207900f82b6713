"""ingest-gateway wiring: settings -> telemetry -> database -> broker (topology) -> readiness -> app."""

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from ingest_gateway.dependencies import build_dependencies
from ingest_gateway.metrics import GatewayMetrics
from ingest_gateway.routes import CONTROLLERS
from ingest_gateway.settings import Settings
from libs.auth import Tokens
from libs.db import create_engine, database_check
from libs.health import Readiness
from libs.logging import configure_logging
from libs.messaging.broker import broker_check, broker_lifecycle, create_broker
from libs.messaging.publisher import Publisher
from libs.messaging.topology import TOPOLOGY
from libs.settings import load_or_exit
from libs.telemetry import Telemetry, setup_telemetry
from libs.web import create_app, serve

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
    engine = create_engine(settings)
    broker = create_broker(settings.rabbitmq_url.get_secret_value(), telemetry, service=settings.service_name)
    publisher = Publisher(broker, TOPOLOGY, telemetry, settings.publish_timeout_s)
    tokens = Tokens(
        settings.jwt_secret.get_secret_value(), settings.jwt_issuer, settings.jwt_audience, settings.token_ttl_s
    )
    readiness = Readiness(
        {"database": database_check(engine), "broker": broker_check(broker)},
        timeout_s=settings.health_check_timeout_s,
    )
    start_broker, stop_broker = broker_lifecycle(broker, TOPOLOGY)
    app = create_app(
        settings,
        telemetry,
        readiness,
        route_handlers=CONTROLLERS,
        on_startup=[start_broker],
        on_shutdown=[stop_broker, engine.dispose],
        dependencies=build_dependencies(settings, engine, publisher, tokens, GatewayMetrics.create(telemetry)),
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OPENAPI,
    )
    return app, readiness


def main() -> None:
    settings = load_or_exit(Settings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    telemetry = setup_telemetry(settings.service_name, settings.traces_exporter)
    app, readiness = build(settings, telemetry)
    serve(app, settings, telemetry, readiness)
