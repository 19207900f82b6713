"""scheduler wiring: settings -> telemetry -> database -> broker (topology) -> readiness -> app.

The foundation stage runs the process with its settings, health and metrics; the jobs build on it.
"""

from litestar import Litestar

from libs.db import create_engine, database_check
from libs.health import Readiness
from libs.logging import configure_logging, get_logger
from libs.messaging.broker import broker_check, broker_lifecycle, create_broker
from libs.messaging.topology import TOPOLOGY
from libs.settings import load_or_exit
from libs.telemetry import Telemetry, setup_telemetry
from libs.web import create_app, serve
from scheduler.metrics import register_job_switches
from scheduler.settings import Settings

log = get_logger("scheduler")


def build(settings: Settings, telemetry: Telemetry) -> tuple[Litestar, Readiness]:
    engine = create_engine(settings)
    broker = create_broker(settings.rabbitmq_url.get_secret_value(), telemetry, service=settings.service_name)
    register_job_switches(telemetry, settings.job_switches())
    readiness = Readiness(
        {"database": database_check(engine), "broker": broker_check(broker)},
        timeout_s=settings.health_check_timeout_s,
    )
    start_broker, stop_broker = broker_lifecycle(broker, TOPOLOGY)

    async def announce() -> None:
        log.info("scheduler.started", {"jobs": settings.job_switches()})

    app = create_app(
        settings,
        telemetry,
        readiness,
        on_startup=[start_broker, announce],
        on_shutdown=[stop_broker, engine.dispose],
    )
    return app, readiness


def main() -> None:
    settings = load_or_exit(Settings)
    configure_logging(settings.service_name, settings.log_level, settings.log_format)
    telemetry = setup_telemetry(settings.service_name, settings.traces_exporter)
    app, readiness = build(settings, telemetry)
    serve(app, settings, telemetry, readiness)
