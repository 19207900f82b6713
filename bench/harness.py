"""What every throughput benchmark stands on: its environment, service processes run from a chosen checkout,
waits with deadlines, and timing a queue's drain from the outside.

A benchmark reaches the code it measures only through HTTP, the broker and the database, and starts each
service as `python -m <package>` with PYTHONPATH on the checkout under test: the same benchmark measures the
code before and after a change. The virtualenv is this interpreter's, for both.
"""

from __future__ import annotations

import asyncio
import base64
import os
import platform
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.machine_cpu import CpuUse, Groups, since, snapshot

ROOT = Path(__file__).resolve().parents[1]
SERVICE_PACKAGES = {
    "ingest-gateway": "ingest_gateway",
    "dlq-service": "dlq_service",
    "distribution-worker": "distribution_worker",
    "email-worker": "email_worker",
    "export-worker": "export_worker",
    "scheduler": "scheduler",
}


class BenchError(Exception):
    """The benchmark could not produce an honest figure (a service failed, work went missing, time ran out)."""


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


GENERATED_SECRETS: dict[str, Callable[[], str]] = {
    "JWT_SECRET": lambda: secrets.token_urlsafe(48),
    "TOTP_ENCRYPTION_KEY": _fernet_key,
    "DLQ_RETRY_SIGNING_KEY": lambda: secrets.token_urlsafe(48),
}
"""Secrets some checkout's services require, made up for the run when the environment has none. A service
ignores variables it does not know, so every checkout gets all of them."""


@dataclass(frozen=True)
class Rss:
    service: str
    rss_mb: float
    """Resident set size as the benchmark stopped the process, after its work."""
    peak_mb: float
    """The process's highest resident set size over its life (VmHWM)."""


@dataclass
class MemoryLog:
    """Every service process's memory as it was stopped, in the order they stopped."""

    readings: list[Rss] = field(default_factory=list)

    def by_service(self) -> dict[str, list[Rss]]:
        found: dict[str, list[Rss]] = {}
        for reading in self.readings:
            found.setdefault(reading.service, []).append(reading)
        return found


def processes_cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` and its children (a child that ends between the reads counts nothing)."""
    try:
        children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        children = []
    total = 0.0
    for process in [pid, *children]:
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def memory_of(pid: int) -> tuple[float, float]:
    """Resident and peak resident set size in MB (/proc/<pid>/status: VmRSS, VmHWM)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@dataclass(frozen=True)
class BenchEnv:
    """Where benchmarks run: the test database and vhost, never the stack's own."""

    database_url: str
    rabbitmq_url: str
    settings: Mapping[str, str]
    """The environment every service gets (DATABASE_URL, RABBITMQ_URL, secrets, ...), besides HTTP_PORT."""
    log_dir: Path
    fresh_tables: bool = True
    """TRUNCATE the benchmark's tables before each run; off where other data must survive (the test suite)."""
    memory: MemoryLog = field(default_factory=MemoryLog)
    """Filled as each service started through `start_service` is stopped."""

    @classmethod
    def from_environ(cls) -> BenchEnv:
        missing = [name for name in ("TEST_DATABASE_URL", "TEST_RABBITMQ_URL") if not os.environ.get(name)]
        if missing:
            raise BenchError(f"{', '.join(missing)} not set: source .run/stack.env (task bench does)")
        log_dir = ROOT / ".run" / "bench-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        database_url, rabbitmq_url = os.environ["TEST_DATABASE_URL"], os.environ["TEST_RABBITMQ_URL"]
        settings = {
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": rabbitmq_url,
            "RABBITMQ_MANAGEMENT_URL": os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672"),
            "EXPORT_DIR": os.environ.get("EXPORT_DIR") or tempfile.mkdtemp(prefix="fmhl-bench-exports-"),
            **{name: os.environ.get(name) or make() for name, make in GENERATED_SECRETS.items()},
        }
        return cls(database_url, rabbitmq_url, settings, log_dir)

    def engine(self) -> AsyncEngine:
        return create_async_engine(self.database_url, pool_size=2)

    def service_environ(self, checkout: Path, port: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Only what the services require: every other setting keeps the service's own default."""
        paths = [str(checkout), *(str(checkout / "services" / name) for name in SERVICE_PACKAGES)]
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join(paths),
            **self.settings,
            "HTTP_PORT": str(port),
            **(extra or {}),
        }


async def reset_tables(engine: AsyncEngine, statement: str) -> None:
    """`statement` is the benchmark's own TRUNCATE ... CASCADE constant."""
    async with engine.begin() as connection:
        await connection.execute(text(statement))


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str, *, service: Service | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if service is not None:
            service.check_alive()
        if await condition():
            return
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:g}s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass(frozen=True)
class Drain:
    items: int
    seconds: float
    cpu_seconds: float
    """CPU time (user + system) the consumer's process spent in the same window."""
    machine: CpuUse | None = None
    """Where the machine's cores went in the same window, when `time_drain` was given the groups to read."""

    @property
    def rate(self) -> float:
        return self.items / self.seconds

    @property
    def cpu_per_item_ms(self) -> float:
        return self.cpu_seconds * 1000 / self.items


async def time_drain(
    count: Callable[[], Awaitable[int]], total: int, service: Service, timeout_s: float, groups: Groups | None = None
) -> Drain:
    """Seconds from the last look that saw no work done to the first that saw all of it, polled every 20 ms;
    with `groups`, the machine's CPU account over the same window.

    Called as the consumer is launched, with its work already queued: the consumer's start-up drops out of the
    figure, whose clock starts at its first commit (to within one poll), not at the process launch.
    """
    if await count() != 0:
        raise BenchError("work was done before the clock started (left over from another run?)")
    idle_at, idle_cpu = time.perf_counter(), service.cpu_seconds()
    idle_machine = snapshot(groups) if groups else None
    deadline = time.monotonic() + timeout_s
    while True:
        service.check_alive()
        looked_at, cpu = time.perf_counter(), service.cpu_seconds()
        done = await count()
        if done == 0:
            # Read after the count (a snapshot costs a few ms, so it is taken only while the clock has not
            # started): a few ms after the clock's start, on a window of seconds.
            idle_at, idle_cpu, idle_machine = looked_at, cpu, snapshot(groups) if groups else None
        elif done >= total:
            return Drain(
                done,
                looked_at - idle_at,
                cpu - idle_cpu,
                since(idle_machine, groups) if groups and idle_machine else None,
            )
        if time.monotonic() > deadline:
            raise BenchError(f"{done} of {total} done after {timeout_s:g}s (log: {service.log})")
        await asyncio.sleep(0.02)


@dataclass
class Service:
    name: str
    port: int
    process: asyncio.subprocess.Process
    log: Path
    memory: MemoryLog | None = None
    """Where the process's memory is noted as it is stopped (services only, not baselines)."""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (/proc) of the process and of the HTTP workers it forked (HTTP_WORKERS:
        the parent's own figure counts a child only once it has exited): far steadier than throughput under
        other load on the machine (though not immune to it), so it shows a change in the service's own cost."""
        return processes_cpu_seconds(self.process.pid)

    def check_alive(self) -> None:
        if self.process.returncode is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise BenchError(f"{self.name} exited with {self.process.returncode}; log {self.log}:\n{tail}")

    async def ready(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                return (await client.get(self.url("/health/ready"))).status_code == 200
        except httpx.HTTPError:
            return False

    async def stop(self) -> None:
        """SIGTERM: the service drains in-flight work and acks it, as in production; killed after 30 s."""
        if self.process.returncode is None:
            if self.memory is not None:
                self.memory.readings.append(Rss(self.name, *memory_of(self.process.pid)))
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def _append_log(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


async def start_process(
    name: str,
    command: list[str],
    *,
    cwd: Path,
    environ: dict[str, str],
    port: int,
    log: Path,
    memory: MemoryLog | None = None,
) -> Service:
    with _append_log(log) as output:
        process = await asyncio.create_subprocess_exec(
            *command, cwd=cwd, env=environ, stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output
        )
    return Service(name, port, process, log, memory)


async def start_service(
    checkout: Path, name: str, env: BenchEnv, port: int, *, extra: Mapping[str, str] | None = None
) -> Service:
    """One service of `checkout` as its own process, with the server settings it runs with in production."""
    return await start_process(
        name,
        [sys.executable, "-m", SERVICE_PACKAGES[name]],
        cwd=checkout,
        environ=env.service_environ(checkout, port, extra),
        port=port,
        log=env.log_dir / f"{name}-{port}.log",
        memory=env.memory,
    )


@asynccontextmanager
async def running(start: Awaitable[Service], *, wait_ready: bool = True) -> AsyncIterator[Service]:
    service = await start
    try:
        if wait_ready:
            await wait_until(service.ready, 90, f"{service.name} ready (log: {service.log})", service=service)
        yield service
    finally:
        await service.stop()


IMPORT_PROBE = """
import importlib, os, sys
root = os.path.realpath(sys.argv[1])
for package in sys.argv[2:]:
    path = os.path.realpath(importlib.import_module(package).__file__)
    if os.path.commonpath([root, path]) != root:
        print(package, path)
"""


async def imports_from(checkout: Path, env: BenchEnv) -> None:
    """Refuses to measure a checkout whose services would import some other tree's code."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", IMPORT_PROBE, str(checkout), "libs", *SERVICE_PACKAGES.values(),
        cwd=checkout, env=env.service_environ(checkout, 1),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"{checkout}: the services do not import: {err.decode()[-2000:]}")
    if out.strip():
        raise BenchError(f"{checkout}: imported from outside the checkout: {out.decode()}")


def machine() -> str:
    """Cores, CPU model and memory, as the report prints them."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    memory_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return (
        f"{os.cpu_count()} cores ({model or platform.machine()}), {memory_kb // 1024 // 1024} GiB, "
        f"Python {platform.python_version()}"
    )


def load_average() -> float:
    """The 1-minute load average: on a shared machine, what else was running while a figure was taken."""
    return os.getloadavg()[0]
