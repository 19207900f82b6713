"""scheduler wiring: settings -> telemetry -> clock -> runtime (database, broker, readiness) -> run router,
ticker -> jobs admin API app."""

from litestar import Litestar
from litestar.di import Provide

from libs.auth import Tokens, admin_principal
from libs.health import Readiness
from libs.messaging.topology import SCHEDULED_JOBS
from libs.runtime import ServiceRuntime, run_service
from libs.telemetry import Telemetry
from libs.web import constant, openapi_config
from scheduler.clock import clock_from
from scheduler.metrics import SchedulerMetrics, last_success_gauge
from scheduler.routes import JobsController
from scheduler.settings import Settings
from scheduler.subscribers import build_router
from scheduler.ticker import Ticker


def build(settings: Settings, telemetry: Telemetry) -> tuple[Litestar, Readiness]:
    clock = clock_from(settings.clock_start, settings.clock_epoch, settings.clock_rate)
    runtime = ServiceRuntime.create(settings, telemetry, consumes=SCHEDULED_JOBS.name, prefetch=settings.prefetch)
    metrics = SchedulerMetrics.create(telemetry, settings.job_switches())
    last_success = last_success_gauge(telemetry, runtime.engine)
    runtime.broker.include_router(
        build_router(runtime.engine, runtime.publisher, telemetry, metrics, last_success, settings)
    )
    ticker = Ticker(
        runtime.engine, runtime.publisher, clock, settings.schedules(), metrics,
        grace_s=settings.misfire_grace_s, tick_s=settings.tick_s,
    )  # fmt: skip
    app = runtime.app(
        route_handlers=[JobsController],
        on_startup=[last_success.start, ticker.start],
        on_shutdown=[ticker.stop, last_success.stop],
        dependencies={
            "principal": Provide(admin_principal(Tokens.from_settings(settings))),
            "engine": constant(runtime.engine),
            "publisher": constant(runtime.publisher),
            "settings": constant(settings),
            "clock": constant(clock),
        },
        openapi_config=openapi_config("fmhl scheduler admin API", refused_everywhere=(503,)),
    )
    return app, runtime.readiness


def main() -> None:
    run_service(Settings, build)
