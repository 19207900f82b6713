"""ingest-gateway wiring: settings -> telemetry -> runtime (database, broker, readiness) -> outbox relay -> tokens
-> API app."""

from litestar import Litestar

from ingest_gateway.dependencies import build_dependencies
from ingest_gateway.metrics import GatewayMetrics
from ingest_gateway.outbox import Relay
from ingest_gateway.routes import api
from ingest_gateway.settings import Settings
from libs.auth import Tokens
from libs.health import Readiness
from libs.runtime import ServiceRuntime, run_service
from libs.telemetry import Telemetry
from libs.web import openapi_config


def build(settings: Settings, telemetry: Telemetry) -> tuple[Litestar, Readiness]:
    runtime = ServiceRuntime.create(settings, telemetry)
    metrics = GatewayMetrics.create(telemetry)
    relay = Relay(runtime.engine, runtime.publisher, metrics)
    # Ready when it can store (database) and publish now (broker, and the relay's last try).
    runtime.readiness = Readiness(
        {**runtime.readiness.checks, "outbox": relay.check()}, timeout_s=settings.health_check_timeout_s
    )
    dependencies = build_dependencies(settings, runtime.engine, relay, Tokens.from_settings(settings), metrics)
    app = runtime.app(
        route_handlers=[api()],
        on_startup=[relay.start],
        on_shutdown=[relay.stop],
        dependencies=dependencies,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config("fmhl ingest-gateway", api_key_header="X-API-Key", refused_everywhere=(503,)),
    )
    return app, runtime.readiness


def main() -> None:
    run_service(Settings, build)
