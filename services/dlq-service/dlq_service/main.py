"""dlq-service wiring: settings -> telemetry -> runtime (database, broker, readiness) -> retry signer, parking,
capture router, DLQ size and parked depth, redriver, queue stats -> admin API app and operations console."""

import httpx
from litestar import Litestar

from dlq_service.console import build_console
from dlq_service.dependencies import build_dependencies
from dlq_service.metrics import DlqMetrics, dlq_size_gauge
from dlq_service.parking import Parking
from dlq_service.queue_stats import QueueStats, vhost_of
from dlq_service.retries import Redriver
from dlq_service.routes import QueuesController
from dlq_service.settings import Settings
from dlq_service.signing import RetrySigner
from dlq_service.subscribers import build_capture, build_router
from libs.auth import Tokens
from libs.health import Readiness
from libs.messaging.broker import QueueDepthGauge
from libs.messaging.topology import DLQ_QUEUE, PARKING_QUEUE
from libs.runtime import ServiceRuntime, run_service
from libs.telemetry import Telemetry
from libs.web import openapi_config


def build(settings: Settings, telemetry: Telemetry) -> tuple[Litestar, Readiness]:
    # The broker's own channel carries only dlq-outcomes; the `dlq` queue's capture has a channel of its own.
    runtime = ServiceRuntime.create(settings, telemetry, consumes=DLQ_QUEUE, prefetch=settings.outcomes_prefetch)
    metrics = DlqMetrics.create(telemetry)
    sizes = dlq_size_gauge(telemetry, runtime.engine, settings.dlq_size_poll_s)
    signer = RetrySigner(settings.dlq_retry_signing_key)
    parking = Parking(runtime.broker, runtime.publisher)
    parked = QueueDepthGauge(runtime.broker, PARKING_QUEUE, telemetry)
    capture = build_capture(
        runtime.broker, runtime.engine, telemetry, metrics, sizes, signer, parking, runtime.outages,
        prefetch=settings.prefetch, nack_backoff_s=settings.nack_backoff_s, capture_attempts=settings.capture_attempts,
        capture_batch=settings.capture_batch, probe_timeout_s=settings.health_check_timeout_s,
    )  # fmt: skip
    runtime.broker.include_router(
        build_router(runtime.engine, runtime.publisher, telemetry, metrics, sizes, signer,
                     handler_timeout_s=settings.handler_timeout_s)
    )  # fmt: skip
    http = httpx.AsyncClient(timeout=settings.health_check_timeout_s)
    queue_stats = QueueStats(
        runtime.broker,
        settings.rabbitmq_management_url.get_secret_value(),
        vhost_of(settings.rabbitmq_url.get_secret_value()),
        settings.queue_stats_cache_s,
        settings.health_check_timeout_s,
    )
    redriver = Redriver(runtime.engine, runtime.publisher, signer)
    console = build_console(settings, runtime.engine, http)
    app = runtime.app(
        route_handlers=[QueuesController, console.router],
        on_startup=[capture.start, sizes.start, parked.start, redriver.resume],
        on_shutdown=[capture.stop, redriver.stop, parked.stop, sizes.stop, http.aclose],
        dependencies=build_dependencies(
            settings,
            runtime.engine,
            runtime.publisher,
            Tokens.from_settings(settings),
            queue_stats,
            http,
            redriver,
            signer,
            parking,
        ),
        openapi_config=openapi_config("fmhl dlq-service admin API", refused_everywhere=(503,)),
        template_config=console.templates,
    )
    return app, runtime.readiness


def main() -> None:
    run_service(Settings, build)
