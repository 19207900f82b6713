"""The HTTP server of a service process: uvicorn (httptools, on uvloop) until SIGTERM, then a graceful drain; with
HTTP_WORKERS > 1, several such processes forked from one parent, sharing its listening socket and serving their
metrics summed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Coroutine, Generator, Iterable
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import uvicorn
import uvloop
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from libs.health import Readiness
from libs.settings import HttpWorkersSettingsMixin, ServiceSettings
from libs.telemetry import PROMETHEUS_CONTENT_TYPE, Telemetry

DUMP_INTERVAL_S = 5.0
"""How often each worker process writes its metrics for the others: a scrape of METRICS_PORT (every 15 s in
deploy/prometheus) sees its siblings at most this stale. Each write renders the whole exposition on the worker's
event loop (about 10 ms of CPU at the dlq-service's size), and a request arriving meanwhile waits: every second,
that was a stall in the admin reads' p99. A scrape on the HTTP port writes the answering worker's own first."""
PARENT_CHECK_S = 1.0
"""How soon a worker notices that its parent was killed without forwarding the stop."""


class _Server(uvicorn.Server):
    """Readiness turns 503 as soon as the stop signal arrives, before in-flight work drains."""

    def __init__(self, config: uvicorn.Config, readiness: Readiness) -> None:
        super().__init__(config)
        self.readiness = readiness

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.readiness.shutting_down = True
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """uvicorn's, without raising the stop signal again once the drain is done: with the default handler put
        back, that killed a single-process service before `serve` flushed its telemetry (the spans of its last
        seconds never reached the collector). It exits 0 instead, as a forked worker does."""
        with super().capture_signals():
            yield
            self._captured_signals.clear()


class Listening(Protocol):
    """Where a server listens: a service's settings, or the benchmark's constant app."""

    @property
    def http_host(self) -> str: ...

    @property
    def http_port(self) -> int: ...


def server_config(app: ASGIApp, settings: Listening) -> uvicorn.Config:
    """uvicorn's own proxy-header handling is off: by default it believes `X-Forwarded-For` from 127.0.0.1, so
    anything on the same host could pose as any client. A service that needs the client's address behind a
    proxy reads it with `libs.web.client_address` and its own TRUSTED_PROXIES.

    HTTP is parsed by httptools (C) rather than h11 (pure Python), and `run_event_loop` drives the server on
    uvloop: 9% less CPU per request on a constant route (two servers side by side under the same load)."""
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        http="httptools",
        log_config=None,
        lifespan="on",
        timeout_graceful_shutdown=20,
        server_header=False,
        proxy_headers=False,
        # Our middleware writes each request's line; uvicorn's own would format the client and path of every
        # response for a logger that drops them.
        access_log=False,
    )


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run` on uvloop: the event loop every service process runs (uvicorn's `loop` setting only applies
    when uvicorn creates the loop itself, which `serve` does not let it do)."""
    uvloop.run(main)


def http_workers(settings: ServiceSettings) -> int:
    """HTTP_WORKERS where a service's settings take it (HttpWorkersSettingsMixin); one process for every other
    service (their work is consuming, which replicas scale)."""
    return settings.http_workers if isinstance(settings, HttpWorkersSettingsMixin) else 1


def serve(app: Litestar, settings: ServiceSettings, telemetry: Telemetry, readiness: Readiness) -> None:
    """Run until SIGTERM/SIGINT; the app's shutdown hooks then stop consuming and drain in-flight work."""
    workers = http_workers(settings)
    if workers > 1:
        _serve_forked(app, settings, telemetry, readiness, workers)
        return
    if settings.metrics_enabled and settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.http_host, registry=telemetry.registry)
    run_event_loop(_Server(server_config(app, settings), readiness).serve())
    telemetry.shutdown()


def merged_families(dumps: Iterable[str]) -> list[Metric]:
    """Several processes' Prometheus expositions as one: counters, histograms and summaries summed per label set
    (what one process serving them all would count), gauges at their highest (a flag or a level, not a count)."""
    families: dict[str, Metric] = {}
    values: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
    for dump in dumps:
        for family in text_string_to_metric_families(dump):
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            for sample in family.samples:
                key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                earlier = values.get(key)
                if earlier is None:
                    values[key] = sample.value
                elif family.type == "gauge":
                    values[key] = max(earlier, sample.value)
                else:
                    values[key] = earlier + sample.value
    for (family_name, sample_name, labels), value in values.items():
        families[family_name].add_sample(sample_name, dict(labels), value)
    return list(families.values())


class _Families(Collector):
    def __init__(self, read: Callable[[], list[Metric]]) -> None:
        self.read = read

    def collect(self) -> Iterable[Metric]:
        return self.read()


def merged_exposition(dumps: Iterable[str]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    families = merged_families(dumps)
    registry.register(_Families(lambda: families))
    return generate_latest(registry)


class _Siblings:
    """The metrics of every worker process: each writes its own exposition into `folder` every DUMP_INTERVAL_S
    (and at once before it answers a scrape), and any of them, or the parent, reads them all and sums them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def dump(self, telemetry: Telemetry) -> None:
        staging = self.folder / f".{os.getpid()}.prom"
        staging.write_bytes(telemetry.exposition())
        staging.replace(self.folder / f"{os.getpid()}.prom")

    def forget(self, pid: int) -> None:
        (self.folder / f"{pid}.prom").unlink(missing_ok=True)

    def dumps(self) -> list[str]:
        dumps = []
        for path in self.folder.glob("*.prom"):
            with contextlib.suppress(FileNotFoundError):
                dumps.append(path.read_text())
        return dumps


class _MergedMetrics:
    """ASGI: `GET /metrics` answers every worker's metrics summed; anything else goes to the app."""

    def __init__(self, app: ASGIApp, siblings: _Siblings, telemetry: Telemetry) -> None:
        self.app = app
        self.siblings = siblings
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] != "/metrics" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        self.siblings.dump(self.telemetry)
        body = merged_exposition(self.siblings.dumps())
        headers = [(b"content-type", PROMETHEUS_CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())]
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": 200, "headers": headers}
        await send(start)
        answer: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
        await send(answer)


def _serve_forked(
    app: Litestar, settings: ServiceSettings, telemetry: Telemetry, readiness: Readiness, workers: int
) -> None:
    """The app was built, nothing connected yet (the broker and the database connect at startup, in each child):
    each child runs its own event loop, pools and relay. The parent only supervises: it forwards SIGTERM/SIGINT,
    serves the summed metrics on METRICS_PORT, and when one child ends, stops the others and exits with its code."""
    folder = Path(tempfile.mkdtemp(prefix=f"fmhl-{settings.service_name}-metrics-"))
    try:
        code = _supervise(app, settings, telemetry, readiness, workers, _Siblings(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if code:
        raise SystemExit(code if code > 0 else 1)


def _supervise(
    app: Litestar, settings: ServiceSettings, telemetry: Telemetry, readiness: Readiness, workers: int,
    siblings: _Siblings,
) -> int:  # fmt: skip
    metrics_enabled = settings.metrics_enabled
    served = _MergedMetrics(app, siblings, telemetry) if metrics_enabled else app
    config = server_config(served, settings)
    listening = config.bind_socket()
    parent = os.getpid()
    children: list[int] = []

    def forward(sig: int, _: FrameType | None) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)

    # A stop signal arriving while the workers are forked waits until each process has its own handler for it.
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        for _ in range(workers):
            pid = os.fork()
            if pid == 0:
                os._exit(_child(config, listening, readiness, telemetry, siblings if metrics_enabled else None, parent))
            children.append(pid)
        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
    listening.close()
    if metrics_enabled and settings.metrics_port:
        _serve_parent_metrics(settings, siblings)
    code = 0
    while children:
        pid, status = os.wait()
        if pid not in children:
            continue
        children.remove(pid)
        siblings.forget(pid)
        exited = os.waitstatus_to_exitcode(status)
        if children and exited != 0 and code == 0:
            # A worker that died takes the service down: the orchestrator restarts it whole.
            forward(signal.SIGTERM, None)
        code = code or exited
    return code


def _child(
    config: uvicorn.Config,
    listening: socket.socket,
    readiness: Readiness,
    telemetry: Telemetry,
    siblings: _Siblings | None,
    parent: int,
) -> int:
    server = _Server(config, readiness)
    stop_asked = False

    def remember(_sig: int, _frame: FrameType | None) -> None:
        # Until uvicorn handles signals, and when it raises the one it handled again after draining: a stop
        # asked for, not a death by signal (the parent reports how its workers ended).
        nonlocal stop_asked
        stop_asked = True

    signal.signal(signal.SIGTERM, remember)
    signal.signal(signal.SIGINT, remember)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})

    async def serve_until_stopped() -> None:
        if stop_asked:
            return
        watching = asyncio.create_task(_watch(server, telemetry, siblings, parent))
        try:
            await server.serve(sockets=[listening])
        finally:
            watching.cancel()

    try:
        run_event_loop(serve_until_stopped())
    except SystemExit as exit_:  # uvicorn's start failure (3), a port taken, a failed lifespan startup
        return exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # the child must never return into the parent's code
        return 1
    finally:
        telemetry.shutdown()
    return 0


async def _watch(server: _Server, telemetry: Telemetry, siblings: _Siblings | None, parent: int) -> None:
    """Writes this worker's metrics for the others, and stops it if its parent is gone (killed without a
    chance to forward the signal)."""
    loop = asyncio.get_running_loop()
    dumped_at = -DUMP_INTERVAL_S
    while True:
        if siblings is not None and loop.time() - dumped_at >= DUMP_INTERVAL_S:
            dumped_at = loop.time()
            with contextlib.suppress(OSError):
                siblings.dump(telemetry)
        if os.getppid() != parent:
            server.handle_exit(signal.SIGTERM, None)
        await asyncio.sleep(PARENT_CHECK_S)


def _serve_parent_metrics(settings: ServiceSettings, siblings: _Siblings) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(lambda: merged_families(siblings.dumps())))
    start_http_server(settings.metrics_port or 0, addr=settings.http_host, registry=registry)
