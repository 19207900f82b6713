"""distribution-worker wiring: settings -> telemetry -> runtime (database, broker, readiness) -> router -> app."""

from litestar import Litestar

from distribution_worker.metrics import DistributionMetrics
from distribution_worker.settings import Settings
from distribution_worker.subscribers import build_router
from libs.health import Readiness
from libs.messaging.topology import DISTRIBUTION
from libs.runtime import ServiceRuntime, run_service
from libs.telemetry import Telemetry


def build(settings: Settings, telemetry: Telemetry) -> tuple[Litestar, Readiness]:
    runtime = ServiceRuntime.create(settings, telemetry, consumes=DISTRIBUTION.name, prefetch=settings.prefetch)
    runtime.broker.include_router(
        build_router(
            runtime.engine,
            runtime.publisher,
            telemetry,
            DistributionMetrics.create(telemetry),
            max_providers=settings.max_providers_per_lead,
            handler_timeout_s=settings.handler_timeout_s,
        )
    )
    return runtime.app(), runtime.readiness


def main() -> None:
    run_service(Settings, build)
