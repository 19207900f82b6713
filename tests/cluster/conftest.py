"""The cluster suite's world: a three-node RabbitMQ cluster, a private PostgreSQL cluster and SMTP sink, and the
pipeline's services given every node's address. The fault suite's workload and checker judge each run."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from libs.messaging.topology import DISTRIBUTION
from tests.cluster.instances import ClusterNode, RabbitMQCluster, build_cluster, until
from tests.conftest import TEST_JWT_SECRET, TEST_TOTP_ENCRYPTION_KEY, ServiceProcess, ServiceProcesses
from tests.faults.checker import Findings, check, conclude, database_now, deadlocks, wait_until_drained
from tests.faults.instances import ROOT, PrivatePostgres
from tests.faults.mail import MailSink, start_sink
from tests.faults.stack import PIPELINE, wait_ready
from tests.faults.workload import Workload, seed

# FAULTS_PORT_OFFSET shifts every port (and the nodes' subnet), as in the fault suite, so that two checkouts on one
# machine can run both suites side by side; the bases differ from the fault suite's.
OFFSET = int(os.environ.get("FAULTS_PORT_OFFSET", "0"))
AMQP_PORTS = [5600 + OFFSET + index for index in range(3)]
DIST_PORTS = [25600 + OFFSET + index for index in range(3)]
MANAGEMENT_PORTS = [15600 + OFFSET + index for index in range(3)]
POSTGRES_PORT, SMTP_PORT = 5605 + OFFSET, 5606 + OFFSET
SERVICE_PORTS = {role: 19240 + OFFSET + index for index, role in enumerate(PIPELINE)}
RESULTS = Path(os.environ.get("CLUSTER_RESULTS", ROOT / ".run" / "cluster" / "results.jsonl"))
LEADS = int(os.environ.get("CLUSTER_LEADS", "300"))
RATE_PER_S = float(os.environ.get("CLUSTER_RATE", "15"))
WORK_QUEUE = DISTRIBUTION.name
OPENED = "broker connection opened to"
"""What libs.messaging.broker logs when a service's connection to a node is open."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(__file__).parent in item.path.parents:
            item.add_marker("stack")


@pytest.fixture(scope="session")
def cluster_root() -> Iterator[Path]:
    # World-traversable: the PostgreSQL and RabbitMQ system users keep their data below it.
    root = Path(tempfile.mkdtemp(prefix="fmhl-cluster-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _declare_topology(url: str) -> None:
    # As the provisioning step does: services declare only their own queues and find the exchanges.
    subprocess.run(
        [sys.executable, "-m", "libs.messaging.permissions", "declare"],
        env={**os.environ, "RABBITMQ_URL": url}, check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="session")
def cluster(cluster_root: Path) -> Iterator[RabbitMQCluster]:
    rabbitmq = build_cluster(
        cluster_root / "rabbitmq", secrets.token_hex(16), ports=AMQP_PORTS, dist_ports=DIST_PORTS,
        management_ports=MANAGEMENT_PORTS, subnet=OFFSET % 250, name=f"cluster{OFFSET}",
    )  # fmt: skip
    try:
        rabbitmq.create(_declare_topology)
        yield rabbitmq
    finally:
        rabbitmq.destroy()


@pytest.fixture(scope="session")
def postgres(cluster_root: Path) -> Iterator[PrivatePostgres]:
    database = PrivatePostgres(cluster_root / "postgres", POSTGRES_PORT, secrets.token_hex(16))
    database.create()
    database.migrate()
    yield database
    database.destroy()


@pytest.fixture(scope="session")
def mail() -> Iterator[MailSink]:
    sink, controller = start_sink(SMTP_PORT)
    yield sink
    controller.stop()


@pytest.fixture(scope="session")
async def engine(postgres: PrivatePostgres) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(postgres.url, pool_pre_ping=True)
    yield engine
    await engine.dispose()


@dataclass
class Services:
    """The pipeline's services as processes, every one given all three nodes' addresses."""

    processes: ServiceProcesses
    running: dict[str, ServiceProcess] = field(default_factory=dict)

    def up(self, timeout: float = 120.0) -> None:
        """Each role running and ready (started again if it died)."""
        for role in PIPELINE:
            process = self.running.get(role)
            if process is None or process.process.poll() is not None:
                self.running[role] = self.processes.start(role, SERVICE_PORTS[role])
        self.ready(timeout)

    def ready(self, timeout: float = 120.0) -> None:
        """Each role ready, without starting anything: a process the fault crashed fails this."""
        for role in PIPELINE:
            wait_ready(self.running[role], timeout)


@pytest.fixture(scope="session")
def services(
    cluster: RabbitMQCluster, postgres: PrivatePostgres, mail: MailSink, cluster_root: Path
) -> Iterator[Services]:
    exports, logs = cluster_root / "exports", cluster_root / "logs"
    exports.mkdir()
    logs.mkdir()
    env = {
        "DATABASE_URL": postgres.url,
        "RABBITMQ_URL": cluster.urls,
        "RABBITMQ_MANAGEMENT_URL": cluster.management_url(cluster.nodes[0]),
        "LOG_LEVEL": "INFO",
        "JWT_SECRET": TEST_JWT_SECRET,
        "TOTP_ENCRYPTION_KEY": TEST_TOTP_ENCRYPTION_KEY,
        "DLQ_RETRY_SIGNING_KEY": secrets.token_urlsafe(40),
        "EXPORT_DIR": str(exports),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(SMTP_PORT),
        "DLQ_SIZE_POLL_S": "1",
        "DB_POOL_SIZE": "10",
    }
    pipeline = Services(ServiceProcesses(env, logs))
    yield pipeline
    pipeline.processes.stop_all()
    kept = RESULTS.parent / "logs"
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(logs, kept)
    for node in cluster.nodes:
        shutil.copytree(node.root / "log", kept / node.node, ignore=shutil.ignore_patterns("*.pid"))


@dataclass
class ClusterRun:
    """One cluster fault test: a workload on a whole, idle cluster, then the checker once the fault healed."""

    name: str
    cluster: RabbitMQCluster
    services: Services
    engine: AsyncEngine
    mail: MailSink
    figures: dict[str, object] = field(default_factory=dict)
    since: datetime | None = None
    deadlocks_before: int = 0
    began: float = field(default_factory=time.monotonic)

    async def workload(self) -> Workload:
        run = await seed(self.engine, f"{self.name[:30]}-{secrets.token_hex(3)}")
        self.since = await database_now(self.engine)
        self.deadlocks_before = await deadlocks(self.engine)
        return Workload(self.services.running["ingest-gateway"].url(""), run, LEADS, RATE_PER_S)

    def observer(self, *avoiding: ClusterNode) -> ClusterNode:
        """A node whose management API answers: one the fault does not touch."""
        return next(node for node in self.cluster.nodes if node not in avoiding and node.running)

    def leader(self, asked: ClusterNode) -> str:
        return str(self.cluster.queue(WORK_QUEUE, asked)["leader"])

    def services_on(self, node: ClusterNode, asked: ClusterNode) -> set[str]:
        return {
            str(connection.get("client_properties", {}).get("connection_name"))
            for connection in self.cluster.connections(asked)
            if connection.get("node") == node.node
        } & set(PIPELINE)

    def reconnects(self, node: ClusterNode, since: datetime) -> dict[str, float]:
        """Seconds after `since` when each service opened a connection to another node than `node`, as its own log
        says (the management API only sees it later, and not at all while a member is frozen or cut off)."""
        reconnected = {}
        for role, process in self.services.running.items():
            for line in process.log.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                event = str(entry.get("event", ""))
                if not event.startswith(OPENED) or event.endswith(f" {node.host}:{node.port}"):
                    continue
                at = datetime.fromisoformat(entry["timestamp"])
                if at > since:
                    reconnected[role] = round((at - since).total_seconds(), 1)
                    break
        return reconnected

    async def seconds_until(self, condition: Callable[[], bool], since: float, timeout: float, what: str) -> float:
        """Polls `condition` (blocking) in a thread until it holds; how long after `since` it did. A management API
        that does not answer yet counts as not holding."""

        def holds() -> bool:
            try:
                return condition()
            except (httpx.HTTPError, KeyError, StopIteration):
                return False

        await asyncio.to_thread(until, holds, timeout, what)
        return round(time.monotonic() - since, 1)

    async def verify(self, workload: Workload) -> Findings:
        """Waits for the workload and for every queue to be empty, then asserts the checker found nothing."""
        async with asyncio.timeout(workload.give_up_after_s + 60):
            await workload.finished.wait()
        await asyncio.to_thread(self.services.ready)
        observer = self.observer()
        drain_s = await wait_until_drained(self.cluster.management_url(observer), self.cluster.vhost)
        assert self.since is not None
        findings = await check(
            self.engine, self.mail, workload, since=self.since, deadlocks_before=self.deadlocks_before
        )
        findings.figures.update(self.figures, drain_s=round(drain_s, 1), test_s=round(time.monotonic() - self.began))
        conclude(self.name, findings, RESULTS)
        return findings


@pytest.fixture
async def cluster_run(
    request: pytest.FixtureRequest, cluster: RabbitMQCluster, services: Services, engine: AsyncEngine, mail: MailSink
) -> ClusterRun:
    """Heals whatever an earlier test left broken (every node up and clustered), then waits until the pipeline is
    ready and idle."""
    await asyncio.to_thread(cluster.heal)
    await asyncio.to_thread(services.up)
    await wait_until_drained(cluster.management_url(cluster.nodes[0]), cluster.vhost)
    return ClusterRun(request.node.name.removeprefix("test_"), cluster, services, engine, mail)
