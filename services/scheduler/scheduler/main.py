"""scheduler wiring: settings -> telemetry -> clock -> database -> broker (topology, router) -> ticker -> app."""

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from libs.auth import Tokens, admin_principal
from libs.db import create_engine, database_check
from libs.health import Readiness
from libs.logging import configure_logging
from libs.messaging.broker import QueueDepthGauge, broker_check, broker_lifecycle, create_broker, queue_check
from libs.messaging.publisher import Publisher
from libs.messaging.topology import SCHEDULED_JOBS, TOPOLOGY
from libs.settings import load_or_exit
from libs.telemetry import Telemetry, setup_telemetry
from libs.web import create_app, serve
from scheduler.clock import clock_from
from scheduler.metrics import LastSuccessPoller, SchedulerMetrics
from scheduler.routes import JobsController
from scheduler.settings import Settings
from scheduler.subscribers import build_router
from scheduler.ticker import Ticker

OPENAPI = OpenAPIConfig(
    title="fmhl scheduler admin API",
    version="1.0.0",
    path="/schema",
    components=Components(
        security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
    ),
)


def build(settings: Settings, telemetry: Telemetry) -> tuple[Litestar, Readiness]:
    clock = clock_from(settings.clock_start, settings.clock_epoch, settings.clock_rate)
    engine = create_engine(settings)
    broker = create_broker(
        settings.rabbitmq_url.get_secret_value(), telemetry, service=settings.service_name, prefetch=settings.prefetch
    )
    publisher = Publisher(broker, TOPOLOGY, telemetry, settings.publish_timeout_s)
    metrics = SchedulerMetrics.create(telemetry, settings.job_switches())
    last_success = LastSuccessPoller(engine, metrics)
    broker.include_router(build_router(engine, publisher, telemetry, metrics, last_success, settings))
    ticker = Ticker(
        engine,
        publisher,
        clock,
        settings.schedules(),
        metrics,
        grace_s=settings.misfire_grace_s,
        tick_s=settings.tick_s,
    )
    readiness = Readiness(
        {
            "database": database_check(engine),
            "broker": broker_check(broker),
            "queue": queue_check(broker, SCHEDULED_JOBS.name),
        },
        timeout_s=settings.health_check_timeout_s,
    )
    start_broker, stop_broker = broker_lifecycle(broker, TOPOLOGY)
    depth = QueueDepthGauge(broker, SCHEDULED_JOBS.name, telemetry)
    tokens = Tokens(
        settings.jwt_secret.get_secret_value(), settings.jwt_issuer, settings.jwt_audience, settings.token_ttl_s
    )

    def constant(value: object) -> Provide:
        return Provide(lambda: value, use_cache=True, sync_to_thread=False)

    app = create_app(
        settings,
        telemetry,
        readiness,
        route_handlers=[JobsController],
        on_startup=[start_broker, depth.start, last_success.start, ticker.start],
        on_shutdown=[ticker.stop, last_success.stop, depth.stop, stop_broker, engine.dispose],
        dependencies={
            "principal": Provide(admin_principal(tokens)),
            "engine": constant(engine),
            "publisher": constant(publisher),
            "settings": constant(settings),
            "clock": constant(clock),
        },
        openapi_config=OPENAPI,
    )
    return app, readiness


def main() -> None:
    settings = load_or_exit(Settings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    telemetry = setup_telemetry(settings.service_name, settings.traces_exporter)
    app, readiness = build(settings, telemetry)
    serve(app, settings, telemetry, readiness)
