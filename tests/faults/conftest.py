"""The fault suite's world, started by these fixtures and by nothing else: a private PostgreSQL cluster and
RabbitMQ node (the faults stop and kill them, so never the shared ones), a TCP fault proxy in front of the broker,
an SMTP sink, and the pipeline's services as processes. Each test gets everything healthy and idle first."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.conftest import TEST_JWT_SECRET, TEST_TOTP_ENCRYPTION_KEY, ServiceProcesses
from tests.faults import proxy as fault_proxy
from tests.faults.checker import Findings, check, conclude, database_now, deadlocks, wait_until_drained
from tests.faults.instances import ROOT, PrivatePostgres, PrivateRabbitMQ
from tests.faults.mail import MailSink, start_sink
from tests.faults.stack import PIPELINE, FaultStack
from tests.faults.workload import Workload, seed

# FAULTS_PORT_OFFSET shifts every port of the suite, so two checkouts on one machine can run it side by side: the
# HTTP ports and the proxy fit in 18600-18625 (tests/faults/stack.py, test_process_lifecycle.py), so offsets 40
# apart never meet.
OFFSET = int(os.environ.get("FAULTS_PORT_OFFSET", "0"))
POSTGRES_PORT = 5499 + OFFSET
RABBITMQ_PORT, RABBITMQ_DIST_PORT, RABBITMQ_MANAGEMENT_PORT = 5699 + OFFSET, 25699 + OFFSET, 15699 + OFFSET
PROXY_PORT, PROXY_CONTROL_PORT = 18624 + OFFSET, 18625 + OFFSET
SMTP_PORT = 2706 + OFFSET
RESULTS = Path(os.environ.get("FAULTS_RESULTS", ROOT / ".run" / "faults" / "results.jsonl"))
LEADS = int(os.environ.get("FAULTS_LEADS", "300"))
"""N: leads per fault; `task test:faults` sets 1,000, a larger N on demand."""
RATE_PER_S = float(os.environ.get("FAULTS_RATE", "15"))
"""Leads submitted per second: a steady stream the faults fall into, well below what the gateway takes."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every fault test starts processes and stops infrastructure: `stack`, so `task test:unit` leaves them out.
    for item in items:
        if Path(__file__).parent in item.path.parents:
            item.add_marker("stack")


@pytest.fixture(scope="session")
def fault_root() -> Iterator[Path]:
    # World-traversable: the PostgreSQL and RabbitMQ system users keep their data below it.
    root = Path(tempfile.mkdtemp(prefix="fmhl-faults-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres(fault_root: Path) -> Iterator[PrivatePostgres]:
    # Hex passwords: a URL-safe one may start with '-', which rabbitmqctl add_user reads as an option.
    cluster = PrivatePostgres(fault_root / "postgres", POSTGRES_PORT, secrets.token_hex(16))
    cluster.create()
    cluster.migrate()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def rabbitmq(fault_root: Path) -> Iterator[PrivateRabbitMQ]:
    node = PrivateRabbitMQ(
        fault_root / "rabbitmq",
        RABBITMQ_PORT,
        RABBITMQ_DIST_PORT,
        RABBITMQ_MANAGEMENT_PORT,
        secrets.token_hex(16),
        node=f"faults{OFFSET or ''}@localhost",
    )
    node.create()
    yield node
    node.destroy()


@dataclass
class Proxy:
    """The fault proxy between every service and the broker."""

    process: subprocess.Popen[bytes]
    port: int
    control_port: int

    def set(self, mode: fault_proxy.Mode) -> str:
        return fault_proxy.command(self.control_port, mode)


@pytest.fixture(scope="session")
def proxy(rabbitmq: PrivateRabbitMQ, fault_root: Path) -> Iterator[Proxy]:
    with (fault_root / "proxy.log").open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.proxy", "--listen", str(PROXY_PORT),
             "--upstream", f"127.0.0.1:{rabbitmq.port}", "--control", str(PROXY_CONTROL_PORT)],
            cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 15
    while True:
        try:
            fault_proxy.command(PROXY_CONTROL_PORT)
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise
            time.sleep(0.1)
    yield Proxy(process, PROXY_PORT, PROXY_CONTROL_PORT)
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def mail() -> Iterator[MailSink]:
    sink, controller = start_sink(SMTP_PORT)
    yield sink
    controller.stop()


@pytest.fixture(scope="session")
def fault_env(postgres: PrivatePostgres, rabbitmq: PrivateRabbitMQ, proxy: Proxy, fault_root: Path) -> dict[str, str]:
    exports = fault_root / "exports"
    exports.mkdir()
    return {
        "DATABASE_URL": postgres.url,
        "RABBITMQ_URL": rabbitmq.url(proxy.port),
        "RABBITMQ_MANAGEMENT_URL": rabbitmq.management_url,
        "LOG_LEVEL": "INFO",
        "JWT_SECRET": TEST_JWT_SECRET,
        "TOTP_ENCRYPTION_KEY": TEST_TOTP_ENCRYPTION_KEY,
        "DLQ_RETRY_SIGNING_KEY": secrets.token_urlsafe(40),
        "EXPORT_DIR": str(exports),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(SMTP_PORT),
        "DLQ_SIZE_POLL_S": "1",
        # Twice the default: on a 2-core machine under the suite's own load, requests wait for a connection.
        "DB_POOL_SIZE": "10",
    }


@pytest.fixture(scope="session")
def stack(fault_env: dict[str, str], fault_root: Path) -> Iterator[FaultStack]:
    logs = fault_root / "logs"
    logs.mkdir()
    services = FaultStack(ServiceProcesses(fault_env, logs))
    yield services
    services.processes.stop_all()
    # The logs outlive the temporary root, for whoever reads a failure.
    kept = RESULTS.parent / "logs"
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(logs, kept)


@pytest.fixture(scope="session")
async def engine(postgres: PrivatePostgres) -> AsyncIterator[AsyncEngine]:
    # pre_ping: the tests' own connections survive the database's restarts.
    engine = create_async_engine(postgres.url, pool_pre_ping=True)
    yield engine
    await engine.dispose()


@dataclass
class Scenario:
    """One fault test: its workload run on a healthy, idle pipeline, then the checker once the faults healed."""

    name: str
    engine: AsyncEngine
    stack: FaultStack
    mail: MailSink
    postgres: PrivatePostgres
    rabbitmq: PrivateRabbitMQ
    proxy: Proxy
    figures: dict[str, object] = field(default_factory=dict)
    since: datetime | None = None
    deadlocks_before: int = 0
    began: float = field(default_factory=time.monotonic)

    async def workload(self, leads: int = LEADS, rate_per_s: float = RATE_PER_S) -> Workload:
        # Short and plain: the run's name becomes its category (at most 100 characters) and mail addresses.
        run = await seed(self.engine, f"{re.sub(r'[^a-z0-9]+', '-', self.name)[:40]}-{secrets.token_hex(3)}")
        self.since = await database_now(self.engine)
        self.deadlocks_before = await deadlocks(self.engine)
        return Workload(self.stack.running["ingest-gateway"].url(""), run, leads, rate_per_s)

    def drive(self, workload: Workload) -> asyncio.Task[None]:
        """The workload in the background, while the test injects its fault."""
        return asyncio.create_task(workload.run_all(), name=f"workload-{self.name}")

    async def verify(
        self,
        workload: Workload,
        *,
        duplicates_allowed: frozenset[str] = frozenset(),
        found: Mapping[str, str] | None = None,
        known: Mapping[str, str] | None = None,
    ) -> Findings:
        """Waits for the workload and for every queue to be empty, then asserts the checker found nothing.
        `found`: what the test itself measured wrong. `known`: findings tolerated here, each with the defect that
        causes it (reported in the results, never hidden)."""
        async with asyncio.timeout(workload.give_up_after_s + 60):
            await workload.finished.wait()
        # Every service the fault touched is back by itself: nothing is restarted for it here.
        await asyncio.to_thread(self.stack.ready, *PIPELINE)
        drain_s = await wait_until_drained(self.rabbitmq.management_url, self.rabbitmq.vhost)
        assert self.since is not None
        findings = await check(
            self.engine, self.mail, workload, since=self.since, deadlocks_before=self.deadlocks_before,
            duplicates_allowed=duplicates_allowed,
        )  # fmt: skip
        findings.problems.update(found or {})
        findings.figures.update(self.figures, drain_s=round(drain_s, 1), test_s=round(time.monotonic() - self.began))
        conclude(self.name, findings, RESULTS, known)
        return findings


@pytest.fixture
async def scenario(
    request: pytest.FixtureRequest,
    engine: AsyncEngine,
    stack: FaultStack,
    mail: MailSink,
    postgres: PrivatePostgres,
    rabbitmq: PrivateRabbitMQ,
    proxy: Proxy,
) -> AsyncIterator[Scenario]:
    """Heals whatever an earlier test left broken, then waits until the pipeline is ready and idle."""
    proxy.set(fault_proxy.Mode.forward)
    mail.on_accept = None
    if not postgres.running:
        await asyncio.to_thread(postgres.start)
    if rabbitmq.launcher is None or rabbitmq.launcher.poll() is not None:
        await asyncio.to_thread(rabbitmq.start)
    await asyncio.to_thread(stack.down, "distribution-worker-2")
    await asyncio.to_thread(stack.up, *PIPELINE)
    await wait_until_drained(rabbitmq.management_url, rabbitmq.vhost)
    yield Scenario(request.node.name.removeprefix("test_"), engine, stack, mail, postgres, rabbitmq, proxy)
    mail.on_accept = None
