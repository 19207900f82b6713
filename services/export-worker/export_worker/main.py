"""export-worker wiring: settings -> telemetry -> runtime (database, broker, readiness) -> router -> app."""

from litestar import Litestar

from export_worker.metrics import ExportMetrics
from export_worker.settings import Settings
from export_worker.subscribers import build_router
from libs.health import Readiness
from libs.messaging.topology import REPORT_EXPORT
from libs.runtime import ServiceRuntime, run_service
from libs.telemetry import Telemetry


def build(settings: Settings, telemetry: Telemetry) -> tuple[Litestar, Readiness]:
    runtime = ServiceRuntime.create(settings, telemetry, consumes=REPORT_EXPORT.name, prefetch=settings.prefetch)
    runtime.broker.include_router(
        build_router(runtime.engine, settings, runtime.publisher, telemetry, ExportMetrics.create(telemetry))
    )
    return runtime.app(), runtime.readiness


def main() -> None:
    run_service(Settings, build)
