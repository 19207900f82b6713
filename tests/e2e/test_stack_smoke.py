"""The six services as separate processes: live, ready and metrics; readiness follows PostgreSQL down and up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Running, postgres_cluster, wait_for

pytestmark = pytest.mark.stack


def test_every_service_is_live_ready_and_exposes_metrics(stack: list[Running]) -> None:
    for service in stack:
        assert httpx.get(service.url("/health/live")).json() == {"status": "alive"}
        ready = httpx.get(service.url("/health/ready")).json()
        assert ready["status"] == "healthy", (service.name, ready)
        assert {"database", "broker"} <= ready["checks"].keys()
        metrics = httpx.get(service.url("/metrics"))
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "fmhl_http_request_duration_ms_bucket" in metrics.text, service.name


def test_workers_report_their_queue_depth(stack: list[Running]) -> None:
    queues = {
        "distribution-worker": "queue",
        "email-worker": "queue",
        "export-worker": "queue",
        "dlq-service": "queue",
    }
    for service in stack:
        if service.name in queues:
            check = httpx.get(service.url("/health/ready")).json()["checks"]["queue"]
            assert check["status"] == "up"
            assert isinstance(check["depth"], int)
    gauges = {"distribution-worker": "distribution", "email-worker": "email", "export-worker": "report-export"}
    for service in stack:
        if service.name in gauges:
            metrics = httpx.get(service.url("/metrics")).text
            assert f'fmhl_queue_depth{{queue="{gauges[service.name]}"}}' in metrics, service.name


@pytest.fixture(scope="module")
def admin_token(stack: list[Running], database_url: str) -> str:
    import asyncio

    import pyotp
    from sqlalchemy.ext.asyncio import create_async_engine

    from ingest_gateway.cli import create_user

    async def admin() -> tuple[str, str]:
        engine = create_async_engine(database_url)
        email = f"fuzz-{os.getpid()}-{time.time_ns()}@example.com"
        _, secret = await create_user(engine, email, "admin", "fuzzing-password-1", None, True)
        await engine.dispose()
        assert secret is not None
        return email, secret

    email, secret = asyncio.run(admin())
    login = {"email": email, "password": "fuzzing-password-1", "totp_code": pyotp.TOTP(secret).now()}
    response = httpx.post(stack[0].url("/api/v1/auth/token"), json=login)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.mark.parametrize("api", ["ingest-gateway", "dlq-service", "scheduler"])
def test_no_generated_request_makes_the_api_answer_500(stack: list[Running], admin_token: str, api: str) -> None:
    """schemathesis derives requests from the published OpenAPI schema; none may end in a server error."""
    service = next(s for s in stack if s.name == api)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", service.url("/schema/openapi.json"),
         "--checks", "not_a_server_error", "--header", f"Authorization: Bearer {admin_token}",
         "--max-examples", "25", "--generation-deterministic", "--request-timeout", "10"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Server error" not in result.stdout


def test_readiness_follows_postgresql_while_liveness_does_not(stack: list[Running]) -> None:
    cluster = postgres_cluster()
    subprocess.run(["pg_ctlcluster", *cluster, "stop", "-m", "fast"], check=True)
    try:
        for service in stack:
            wait_for(
                lambda s=service: httpx.get(s.url("/health/ready"), timeout=5).status_code == 503,
                20,
                f"{service.name} unready without PostgreSQL",
            )
            body = httpx.get(service.url("/health/ready"), timeout=5).json()
            assert "database" in body["failing"], (service.name, body)
            assert body["checks"]["database"]["status"] == "down"
            assert body["checks"]["broker"]["status"] == "up"
            assert httpx.get(service.url("/health/live")).status_code == 200
    finally:
        subprocess.run(["pg_ctlcluster", *cluster, "start"], check=True)
    for service in stack:
        wait_for(
            lambda s=service: httpx.get(s.url("/health/ready"), timeout=5).status_code == 200,
            30,
            f"{service.name} ready again",
        )


def test_sigterm_drains_and_stops_each_service(stack: list[Running]) -> None:
    for service in stack:
        service.process.send_signal(signal.SIGTERM)
    for service in stack:
        # uvicorn re-raises the signal once shutdown is complete, as Kubernetes expects.
        assert service.process.wait(timeout=25) in (0, -signal.SIGTERM)
        assert '"event":"Application shutdown complete."' in service.log.read_text(), service.name
