"""The routes every service serves besides its API: liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Response, get
from litestar.types import ControllerRouterHandler

from libs.health import Readiness
from libs.telemetry import PROMETHEUS_CONTENT_TYPE, Telemetry


def ops_routes(telemetry: Telemetry, readiness: Readiness, metrics_enabled: bool) -> list[ControllerRouterHandler]:
    @get("/health/live", media_type=MediaType.JSON, include_in_schema=False, sync_to_thread=False)
    def live() -> dict[str, str]:
        return {"status": "alive"}

    @get("/health/ready", media_type=MediaType.JSON, include_in_schema=False)
    async def ready() -> Response[dict[str, Any]]:
        ok, body = await readiness.report()
        return Response(body, status_code=200 if ok else 503)

    @get("/metrics", include_in_schema=False, sync_to_thread=False)
    def metrics() -> Response[bytes]:
        return Response(telemetry.exposition(), media_type=PROMETHEUS_CONTENT_TYPE)

    return [live, ready, *([metrics] if metrics_enabled else [])]
