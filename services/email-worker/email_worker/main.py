"""email-worker wiring: settings -> telemetry -> runtime (database, broker, readiness) -> SMTP sessions -> router ->
app."""

from litestar import Litestar

from email_worker.metrics import EmailMetrics
from email_worker.settings import Settings
from email_worker.smtp_sessions import SmtpSessions
from email_worker.subscribers import build_router
from libs.health import Readiness
from libs.messaging.topology import EMAIL
from libs.runtime import ServiceRuntime, run_service
from libs.telemetry import Telemetry


def build(settings: Settings, telemetry: Telemetry) -> tuple[Litestar, Readiness]:
    runtime = ServiceRuntime.create(settings, telemetry, consumes=EMAIL.name, prefetch=settings.prefetch)
    smtp = SmtpSessions(settings)
    runtime.broker.include_router(
        build_router(runtime.engine, settings, smtp, runtime.publisher, telemetry, EmailMetrics.create(telemetry))
    )
    return runtime.app(on_shutdown=[smtp.close]), runtime.readiness


def main() -> None:
    run_service(Settings, build)
