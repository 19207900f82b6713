"""The six deployables, declared once: the name used everywhere (folder, compose, Kubernetes, the `service` log
field), the package `python -m` runs, and the HTTP port a local stack gives it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    name: str
    package: str
    port: int

    @property
    def folder(self) -> str:
        """Where its code lives, relative to the repository root."""
        return f"services/{self.name}"


SERVICES: tuple[Service, ...] = (
    Service("ingest-gateway", "ingest_gateway", 8000),
    Service("dlq-service", "dlq_service", 8001),
    Service("distribution-worker", "distribution_worker", 8101),
    Service("email-worker", "email_worker", 8102),
    Service("export-worker", "export_worker", 8103),
    Service("scheduler", "scheduler", 8104),
)


def service(name: str) -> Service:
    """The declared service of that name; KeyError for any other."""
    for declared in SERVICES:
        if declared.name == name:
            return declared
    raise KeyError(name)
