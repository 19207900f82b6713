"""ingest-gateway wiring: settings -> telemetry -> database -> broker (topology) -> readiness -> app."""

from litestar import Litestar
from litestar.openapi import OpenAPIConfig

from ingest_gateway.metrics import GatewayMetrics
from ingest_gateway.routes import leads_controller
from ingest_gateway.settings import Settings
from libs.db import create_engine, database_check
from libs.health import Readiness
from libs.logging import configure_logging
from libs.messaging.broker import broker_check, broker_lifecycle, create_broker
from libs.messaging.publisher import Publisher
from libs.messaging.topology import TOPOLOGY
from libs.settings import load_or_exit
from libs.telemetry import Telemetry, setup_telemetry
from libs.web import create_app, serve


def build(settings: Settings, telemetry: Telemetry) -> tuple[Litestar, Readiness]:
    engine = create_engine(settings)
    broker = create_broker(settings.rabbitmq_url.get_secret_value(), telemetry, service=settings.service_name)
    publisher = Publisher(broker, TOPOLOGY, telemetry, settings.publish_timeout_s)
    readiness = Readiness(
        {"database": database_check(engine), "broker": broker_check(broker)},
        timeout_s=settings.health_check_timeout_s,
    )
    start_broker, stop_broker = broker_lifecycle(broker, TOPOLOGY)
    app = create_app(
        settings,
        telemetry,
        readiness,
        route_handlers=[leads_controller(publisher, GatewayMetrics.create(telemetry), settings.max_body_bytes)],
        on_startup=[start_broker],
        on_shutdown=[stop_broker, engine.dispose],
        openapi_config=OpenAPIConfig(title="fmhl ingest-gateway", version="1.0.0", path="/schema"),
    )
    return app, readiness


def main() -> None:
    settings = load_or_exit(Settings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    telemetry = setup_telemetry(settings.service_name, settings.traces_exporter)
    app, readiness = build(settings, telemetry)
    serve(app, settings, telemetry, readiness)
