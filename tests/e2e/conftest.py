"""The six services started as separate processes on their own ports, against the test vhost and database."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink

from libs.runtime import SERVICES
from tests.conftest import ServiceProcess, ServiceProcesses

FIRST_PORT = 18_000


def postgres_cluster() -> list[str]:
    listing = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout
    version, name = listing.split()[:2]
    return [version, name]


@pytest.fixture(scope="module")
def stack(service_processes: ServiceProcesses, service_env: dict[str, str]) -> Iterator[list[ServiceProcess]]:
    """Every declared service, in declaration order, each on a port of its own from FIRST_PORT on, with an SMTP
    server that takes every mail: without one the email-worker pauses (its SMTP server is a dependency it waits
    for), and its readiness would answer 503 whatever a test does."""
    smtp = Controller(Sink(), hostname="127.0.0.1", port=int(service_env["SMTP_PORT"]))
    smtp.start()
    try:
        running = [
            service_processes.start(declared.name, FIRST_PORT + offset, HEALTH_CHECK_TIMEOUT_S="1", DLQ_SIZE_POLL_S="1")
            for offset, declared in enumerate(SERVICES)
        ]
        for process in running:
            process.wait_ready()
        yield running
    finally:
        smtp.stop()
