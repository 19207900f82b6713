"""email-worker wiring: settings -> telemetry -> database -> broker (topology, router) -> readiness -> app."""

from litestar import Litestar

from email_worker.metrics import EmailMetrics
from email_worker.settings import Settings
from email_worker.subscribers import build_router
from libs.db import create_engine, database_check
from libs.health import Readiness
from libs.logging import configure_logging
from libs.messaging.broker import QueueDepthGauge, broker_check, broker_lifecycle, create_broker, queue_check
from libs.messaging.publisher import Publisher
from libs.messaging.topology import EMAIL, TOPOLOGY
from libs.settings import load_or_exit
from libs.telemetry import Telemetry, setup_telemetry
from libs.web import create_app, serve


def build(settings: Settings, telemetry: Telemetry) -> tuple[Litestar, Readiness]:
    engine = create_engine(settings)
    broker = create_broker(
        settings.rabbitmq_url.get_secret_value(),
        telemetry,
        service=settings.service_name,
        prefetch=settings.prefetch,
    )
    publisher = Publisher(broker, TOPOLOGY, telemetry, settings.publish_timeout_s)
    broker.include_router(build_router(engine, settings, publisher, telemetry, EmailMetrics.create(telemetry)))
    readiness = Readiness(
        {
            "database": database_check(engine),
            "broker": broker_check(broker),
            "queue": queue_check(broker, EMAIL.name),
        },
        timeout_s=settings.health_check_timeout_s,
    )
    start_broker, stop_broker = broker_lifecycle(broker, TOPOLOGY)
    depth = QueueDepthGauge(broker, EMAIL.name, telemetry)
    app = create_app(
        settings,
        telemetry,
        readiness,
        on_startup=[start_broker, depth.start],
        on_shutdown=[depth.stop, stop_broker, engine.dispose],
    )
    return app, readiness


def main() -> None:
    settings = load_or_exit(Settings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    telemetry = setup_telemetry(settings.service_name, settings.traces_exporter)
    app, readiness = build(settings, telemetry)
    serve(app, settings, telemetry, readiness)
