"""The six services started as separate processes on their own ports, against the test vhost and database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

SERVICES = {
    "ingest-gateway": "ingest_gateway",
    "dlq-service": "dlq_service",
    "distribution-worker": "distribution_worker",
    "email-worker": "email_worker",
    "export-worker": "export_worker",
    "scheduler": "scheduler",
}
FIRST_PORT = 18_000


@dataclass
class Running:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def postgres_cluster() -> list[str]:
    version, name = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout.split()[
        :2
    ]
    return [version, name]


@pytest.fixture(scope="module")
def stack(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Running]]:
    logs = tmp_path_factory.mktemp("stack-logs")
    running = []
    for offset, (name, module) in enumerate(SERVICES.items()):
        port = FIRST_PORT + offset
        log = logs / f"{name}.log"
        environment = {**os.environ, **service_env, "HTTP_PORT": str(port), "HEALTH_CHECK_TIMEOUT_S": "1",
                       "DLQ_SIZE_POLL_S": "1"}  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", module], env=environment, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        running.append(Running(name, port, process, log))
    try:
        for service in running:
            wait_for(
                lambda s=service: httpx.get(s.url("/health/ready")).status_code == 200,
                60,
                f"{service.name} ready (log: {service.log.read_text()[-2000:]})",
            )
        yield running
    finally:
        for service in running:
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        for service in running:
            try:
                service.process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                service.process.kill()
