"""The services under test, each a `python -m` process on its own port, against the private PostgreSQL and
RabbitMQ (the broker reached through the fault proxy). A role is a service or a second replica of one."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

import httpx

from tests.conftest import ServiceProcess, ServiceProcesses

_OFFSET = int(os.environ.get("FAULTS_PORT_OFFSET", "0"))  # see tests/faults/conftest.py
PORTS = {
    role: port + _OFFSET
    for role, port in {
        "ingest-gateway": 18600,
        "dlq-service": 18601,
        "distribution-worker": 18602,
        "email-worker": 18603,
        "export-worker": 18604,
        "distribution-worker-2": 18605,
    }.items()
}
PIPELINE = ("ingest-gateway", "dlq-service", "distribution-worker", "email-worker", "export-worker")


def service_of(role: str) -> str:
    return role.removesuffix("-2")


def log_tail(process: ServiceProcess, characters: int = 3000) -> str:
    return process.log.read_text(errors="replace")[-characters:]


def wait_ready(process: ServiceProcess, timeout: float) -> None:
    """Until `/health/ready` answers 200; fails at once, with the log's end, if the process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process.process.poll() is not None:
            raise AssertionError(f"{process.name} exited with {process.process.returncode}:\n{log_tail(process)}")
        try:
            if httpx.get(process.url("/health/ready"), timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{process.name} not ready within {timeout:g}s:\n{log_tail(process)}")
        time.sleep(0.2)


@dataclass
class FaultStack:
    processes: ServiceProcesses
    running: dict[str, ServiceProcess] = field(default_factory=dict)

    def start(self, role: str, **settings: str) -> ServiceProcess:
        process = self.processes.start(service_of(role), PORTS[role], **settings)
        self.running[role] = process
        return process

    def alive(self, role: str) -> bool:
        process = self.running.get(role)
        return process is not None and process.process.poll() is None

    def up(self, *roles: str, timeout: float = 90.0) -> None:
        """Each role running and ready (started again if it died or was stopped)."""
        for role in roles:
            if not self.alive(role):
                self.start(role)
        for role in roles:
            wait_ready(self.running[role], timeout)

    def ready(self, *roles: str, timeout: float = 90.0) -> None:
        """Each role ready, without starting anything: a process the fault crashed fails this."""
        for role in roles:
            wait_ready(self.running[role], timeout)

    def down(self, *roles: str) -> None:
        """SIGTERM, as an orchestrator stops a process; every role not named keeps running."""
        for role in roles:
            if self.alive(role):
                self.running[role].stop()

    def kill(self, role: str) -> None:
        process = self.running[role].process
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def freeze(self, role: str) -> None:
        self.running[role].process.send_signal(signal.SIGSTOP)

    def thaw(self, role: str) -> None:
        self.running[role].process.send_signal(signal.SIGCONT)

    def pid(self, role: str) -> int:
        return self.running[role].process.pid
