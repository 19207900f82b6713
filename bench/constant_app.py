"""The ingest baseline: a constant Litestar route under the server settings every service runs with
(libs/web `serve`: one uvicorn process, no access log, lifespan on). Usage: python -m bench.constant_app PORT"""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from litestar import Litestar, MediaType, get, post

ACCEPTED = {"lead_id": "00000000-0000-0000-0000-000000000000", "status": "submitted"}


@post("/api/v1/leads", status_code=202, media_type=MediaType.JSON)
async def submit_lead() -> dict[str, str]:
    return ACCEPTED


@get("/health/ready", media_type=MediaType.JSON)
async def ready() -> dict[str, str]:
    return {"status": "ready"}


def main(port: int) -> None:
    config = uvicorn.Config(
        Litestar(route_handlers=[submit_lead, ready], logging_config=None),
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=20,
        server_header=False,
    )
    asyncio.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main(int(sys.argv[1]))
