"""Shared fixtures: the real RabbitMQ and PostgreSQL started by `deploy/local/stack.sh test`, and service processes.

Tests run against their own vhost (`fmhl-test`) and database (`fmhl_test`), so a running stack is untouched.
A test's markers follow from the fixtures it uses, directly or through other fixtures: `broker` when it needs
`rabbitmq_url`, `database` when it needs `database_url` or `schema_database_url`, `stack` when it starts service
processes (`service_processes`). So `-m "not broker and not database and not stack"` runs exactly the tests
that need none of them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from libs.runtime import Service, service

MARKER_OF_FIXTURE = {
    "rabbitmq_url": "broker",
    "database_url": "database",
    "schema_database_url": "database",
    "service_processes": "stack",
}
# Whole-tree checks that run external tools (promtool, kubectl, mypy, ruff, schema validators): part of
# `task test` and `task lint`, kept out of the seconds-long `task test:unit` loop.
TOOL_MODULES = {"test_alerts.py", "test_kubernetes.py", "test_code_quality.py", "test_deploy.py", "test_packaging.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # The closure of every fixture the test requests, not only those named in its signature.
        used = set(getattr(item, "fixturenames", ()))
        for fixture, marker in MARKER_OF_FIXTURE.items():
            if fixture in used:
                item.add_marker(marker)
        if item.path.name in TOOL_MODULES or item.path.parent.name == "deploy":
            item.add_marker("tools")


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with `bash deploy/local/stack.sh test`", pytrace=False)
    return value


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    return _required("TEST_RABBITMQ_URL")


@pytest.fixture(scope="session")
def database_url() -> str:
    return _required("TEST_DATABASE_URL")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test database, disposed after the test (a module that shares one for speed declares its
    own, module-scoped)."""
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def schema_database_url() -> str:
    """A second database that schema tests may migrate down and up without disturbing the others."""
    return _required("TEST_SCHEMA_DATABASE_URL")


TEST_JWT_SECRET = "test-only-signing-key-0123456789abcdef"
TEST_TOTP_ENCRYPTION_KEY = "dGVzdC1vbmx5LXRvdHAtc2VhbGluZy1rZXktMzJieSE="  # a Fernet key: 32 bytes, base64
TEST_RETRY_SIGNING_KEY = "test-only-retry-signing-key-0123456789abcdef"


@pytest.fixture(scope="session")
def service_env(rabbitmq_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for a service process or settings object pointed at the test vhost and database."""
    return {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "DEBUG",
        "JWT_SECRET": TEST_JWT_SECRET,
        "TOTP_ENCRYPTION_KEY": TEST_TOTP_ENCRYPTION_KEY,
        "DLQ_RETRY_SIGNING_KEY": TEST_RETRY_SIGNING_KEY,
        "EXPORT_DIR": str(tmp_path_factory.mktemp("exports")),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": os.environ.get("TEST_SMTP_PORT", "2626"),
        "RABBITMQ_MANAGEMENT_URL": os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672"),
    }


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls `condition` until it holds; a connection refused while a process starts counts as not yet."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


@dataclass
class ServiceProcess:
    service: Service
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def name(self) -> str:
        return self.service.name

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        wait_for(
            lambda: self.process.poll() is None and httpx.get(self.url("/health/ready")).status_code == 200,
            timeout,
            f"{self.name} ready (log: {self.log.read_text()[-2000:]})",
        )

    def stop(self, timeout: float = 25.0) -> int:
        """SIGTERM, as Kubernetes stops a pod; killed if it has not drained within `timeout`."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


@dataclass
class ServiceProcesses:
    """Starts services as `python -m <package>` processes against the test vhost and database; stops all of them
    at the end of the module."""

    env: dict[str, str]
    logs: Path
    started: list[ServiceProcess] = field(default_factory=list)

    def start(self, name: str, port: int, **settings: str) -> ServiceProcess:
        """`settings`: extra environment variables, e.g. `EXPORT_BATCH_ROWS="500"`."""
        declared = service(name)
        log = self.logs / f"{name}-{port}.log"
        environment = {**os.environ, **self.env, "HTTP_PORT": str(port), **settings}
        with log.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", declared.package], env=environment, stdout=output, stderr=subprocess.STDOUT
            )
        running = ServiceProcess(declared, port, process, log)
        self.started.append(running)
        return running

    def stop_all(self) -> None:
        for running in self.started:
            if running.process.poll() is None:
                running.process.send_signal(signal.SIGTERM)
        for running in self.started:
            running.stop()


@pytest.fixture(scope="module")
def service_processes(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcesses]:
    processes = ServiceProcesses(service_env, tmp_path_factory.mktemp("service-logs"))
    yield processes
    processes.stop_all()
