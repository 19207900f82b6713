"""The ingest baseline: a constant Litestar route under the server settings every service runs with
(libs/web `serve`: one uvicorn process with the same `server_config` and event loop). Usage:
python -m bench.constant_app PORT"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import uvicorn
from litestar import Litestar, MediaType, get, post

from libs.web import run_event_loop, server_config

ACCEPTED = {"lead_id": "00000000-0000-0000-0000-000000000000", "status": "submitted"}


@post("/api/v1/leads", status_code=202, media_type=MediaType.JSON)
async def submit_lead() -> dict[str, str]:
    return ACCEPTED


@get("/health/ready", media_type=MediaType.JSON)
async def ready() -> dict[str, str]:
    return {"status": "ready"}


@dataclass(frozen=True)
class Listening:
    http_port: int
    http_host: str = "127.0.0.1"


def main(port: int) -> None:
    app = Litestar(route_handlers=[submit_lead, ready], logging_config=None)
    run_event_loop(uvicorn.Server(server_config(app, Listening(port))).serve())


if __name__ == "__main__":
    main(int(sys.argv[1]))
