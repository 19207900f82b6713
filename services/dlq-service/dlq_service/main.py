"""dlq-service wiring: settings -> telemetry -> database -> broker (topology, router) -> readiness -> app."""

import httpx
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from dlq_service.dependencies import build_dependencies
from dlq_service.metrics import DlqMetrics, DlqSizePoller
from dlq_service.queue_stats import QueueStats, vhost_of
from dlq_service.retries import Redriver
from dlq_service.routes import QueuesController
from dlq_service.settings import Settings
from dlq_service.subscribers import build_router
from libs.auth import Tokens
from libs.db import create_engine, database_check
from libs.health import Readiness
from libs.logging import configure_logging
from libs.messaging.broker import QueueDepthGauge, broker_check, broker_lifecycle, create_broker, queue_check
from libs.messaging.publisher import Publisher
from libs.messaging.topology import DLQ_QUEUE, TOPOLOGY
from libs.settings import load_or_exit
from libs.telemetry import Telemetry, setup_telemetry
from libs.web import create_app, serve

OPENAPI = OpenAPIConfig(
    title="fmhl dlq-service admin API",
    version="1.0.0",
    path="/schema",
    components=Components(
        security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
    ),
)


def build(settings: Settings, telemetry: Telemetry) -> tuple[Litestar, Readiness]:
    engine = create_engine(settings)
    rabbitmq_url = settings.rabbitmq_url.get_secret_value()
    broker = create_broker(rabbitmq_url, telemetry, service=settings.service_name, prefetch=settings.prefetch)
    publisher = Publisher(broker, TOPOLOGY, telemetry, settings.publish_timeout_s)
    metrics = DlqMetrics.create(telemetry)
    sizes = DlqSizePoller(engine, metrics, settings.dlq_size_poll_s)
    broker.include_router(
        build_router(
            engine, publisher, telemetry, metrics, sizes,
            nack_backoff_s=settings.nack_backoff_s, handler_timeout_s=settings.handler_timeout_s,
        )
    )  # fmt: skip
    readiness = Readiness(
        {"database": database_check(engine), "broker": broker_check(broker), "queue": queue_check(broker, DLQ_QUEUE)},
        timeout_s=settings.health_check_timeout_s,
    )
    start_broker, stop_broker = broker_lifecycle(broker, TOPOLOGY)
    depth = QueueDepthGauge(broker, DLQ_QUEUE, telemetry)
    tokens = Tokens(
        settings.jwt_secret.get_secret_value(), settings.jwt_issuer, settings.jwt_audience, settings.token_ttl_s
    )
    http = httpx.AsyncClient(timeout=settings.health_check_timeout_s)
    queue_stats = QueueStats(
        settings.rabbitmq_management_url.get_secret_value(), vhost_of(rabbitmq_url), settings.queue_stats_cache_s
    )
    redriver = Redriver(engine, publisher)
    app = create_app(
        settings,
        telemetry,
        readiness,
        route_handlers=[QueuesController],
        on_startup=[start_broker, depth.start, sizes.start, redriver.resume],
        on_shutdown=[redriver.stop, sizes.stop, depth.stop, stop_broker, http.aclose, engine.dispose],
        dependencies=build_dependencies(settings, engine, publisher, tokens, queue_stats, http, redriver),
        openapi_config=OPENAPI,
    )
    return app, readiness


def main() -> None:
    settings = load_or_exit(Settings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    telemetry = setup_telemetry(settings.service_name, settings.traces_exporter)
    app, readiness = build(settings, telemetry)
    serve(app, settings, telemetry, readiness)
