"""The ingest baseline: a constant Litestar route under the server settings every service runs with
(libs/web `serve`: uvicorn with the same `server_config` and event loop, in as many processes as the gateway's
HTTP_WORKERS, forked from one parent and sharing its listening socket). Usage:
python -m bench.constant_app PORT [PROCESSES]"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from types import FrameType

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


def main(port: int, processes: int) -> None:
    app = Litestar(route_handlers=[submit_lead, ready], logging_config=None)
    config = server_config(app, Listening(port))
    if processes == 1:
        run_event_loop(uvicorn.Server(config).serve())
        return
    # As libs/web forks HTTP_WORKERS: the socket bound once, each child its own event loop on it.
    listening = config.bind_socket()
    stops = {signal.SIGTERM, signal.SIGINT}
    children: list[int] = []
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
            run_event_loop(uvicorn.Server(config).serve(sockets=[listening]))
            os._exit(0)
        children.append(pid)

    def forward(sig: int, _: FrameType | None) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
    listening.close()
    for _ in children:
        os.wait()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1)
