"""The HTTP server of a service process: uvicorn until SIGTERM, then a graceful drain."""

from __future__ import annotations

import asyncio
from types import FrameType

import uvicorn
from litestar import Litestar
from prometheus_client import start_http_server

from libs.health import Readiness
from libs.settings import ServiceSettings
from libs.telemetry import Telemetry


class _Server(uvicorn.Server):
    """Readiness turns 503 as soon as the stop signal arrives, before in-flight work drains."""

    def __init__(self, config: uvicorn.Config, readiness: Readiness) -> None:
        super().__init__(config)
        self.readiness = readiness

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.readiness.shutting_down = True
        super().handle_exit(sig, frame)


def server_config(app: Litestar, settings: ServiceSettings) -> uvicorn.Config:
    """uvicorn's own proxy-header handling is off: by default it believes `X-Forwarded-For` from 127.0.0.1, so
    anything on the same host could pose as any client. A service that needs the client's address behind a
    proxy reads it with `libs.web.client_address` and its own TRUSTED_PROXIES."""
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=20,
        server_header=False,
        proxy_headers=False,
    )


def serve(app: Litestar, settings: ServiceSettings, telemetry: Telemetry, readiness: Readiness) -> None:
    """Run until SIGTERM/SIGINT; the app's shutdown hooks then stop consuming and drain in-flight work."""
    if settings.metrics_enabled and settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.http_host, registry=telemetry.registry)
    asyncio.run(_Server(server_config(app, settings), readiness).serve())
    telemetry.shutdown()
