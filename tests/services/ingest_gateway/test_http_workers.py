"""HTTP_WORKERS: several gateway processes share one port, answer its /metrics summed over all of them, and all
drain and stop on one SIGTERM to their parent."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServiceProcesses, wait_for

PORT = 19290
WORKERS = 3
PROBES = 30


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def requests_counted(metrics: str, route: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "fmhl_http_request_duration_ms_count" and sample.labels.get("route") == route
    )


def test_worker_processes_share_the_port_and_count_every_request_in_one_metrics(
    service_processes: ServiceProcesses,
) -> None:
    gateway = service_processes.start("ingest-gateway", PORT, HTTP_WORKERS=str(WORKERS))
    gateway.wait_ready()
    workers = children(gateway.process.pid)
    assert len(workers) == WORKERS
    for _ in range(PROBES):
        # A new connection each: the kernel spreads them over the workers.
        assert httpx.post(gateway.url("/api/v1/leads"), json={}).status_code == 401
    # The other workers' numbers are at most one dump interval (DUMP_INTERVAL_S, 5 s) old.
    wait_for(
        lambda: requests_counted(httpx.get(gateway.url("/metrics")).text, "/api/v1/leads") == PROBES,
        15,
        f"/metrics counting all {PROBES} requests",
    )
    assert gateway.stop() == 0
    wait_for(lambda: not any(Path(f"/proc/{worker}").exists() for worker in workers), 10, "every worker gone")
