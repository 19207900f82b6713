"""One correlation id follows a lead from the HTTP request, through the broker, into the worker's logs."""

import asyncio
import io
import logging
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from distribution_worker.main import build as build_worker
from distribution_worker.settings import Settings as WorkerSettings
from ingest_gateway.main import build as build_gateway
from ingest_gateway.settings import Settings as GatewaySettings
from libs.logging import JsonFormatter
from libs.settings import load_settings
from libs.telemetry import setup_telemetry

pytestmark = pytest.mark.broker

LEAD = {
    "external_id": "ext-1",
    "category": "roofing",
    "zip": "94107",
    "contact": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+1 415 555 0100"},
}


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("in-process"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)


@pytest.fixture
async def gateway(service_env: dict[str, str]) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = load_settings(GatewaySettings, **{k.lower(): v for k, v in service_env.items()})
    app, _ = build_gateway(settings, setup_telemetry("ingest-gateway"))
    async with AsyncTestClient(app) as client:
        yield client


@pytest.fixture
async def worker(service_env: dict[str, str]) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = load_settings(WorkerSettings, **{k.lower(): v for k, v in service_env.items()})
    app, _ = build_worker(settings, setup_telemetry("distribution-worker"))
    async with AsyncTestClient(app) as client:
        yield client


def events_with(stream: io.StringIO, correlation_id: str) -> list[dict[str, object]]:
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["correlation_id"] == correlation_id]


async def test_a_submitted_lead_reaches_the_worker_with_the_same_correlation_id(
    gateway: AsyncTestClient[Litestar],
    worker: AsyncTestClient[Litestar],
    log_lines: io.StringIO,
) -> None:
    response = await gateway.post("/api/v1/leads", json=LEAD, headers={"X-Correlation-ID": "cid-e2e-1"})
    assert response.status_code == 202, response.text
    assert response.headers["x-correlation-id"] == "cid-e2e-1"
    lead_id = response.json()["lead_id"]

    async with asyncio.timeout(10):
        while not any(line["event"] == "lead.submitted_received" for line in events_with(log_lines, "cid-e2e-1")):
            await asyncio.sleep(0.05)
    received = next(line for line in events_with(log_lines, "cid-e2e-1") if line["event"] == "lead.submitted_received")
    published = next(line for line in events_with(log_lines, "cid-e2e-1") if line["event"] == "lead.submitted")
    assert received["metadata"] == {"lead_id": lead_id, "attempt": 1}
    assert received["trace_id"] == published["trace_id"]
    assert received["logger"] == "distribution_worker"


async def test_without_a_correlation_id_the_gateway_makes_one(gateway: AsyncTestClient) -> None:  # type: ignore[type-arg]
    response = await gateway.post("/api/v1/leads", json=LEAD)
    assert response.status_code == 202
    assert len(response.headers["x-correlation-id"]) == 36


async def test_bad_lead_gets_400_naming_each_field(gateway: AsyncTestClient) -> None:  # type: ignore[type-arg]
    bad = {**LEAD, "zip": "9410", "surprise": 1, "category": "roof\u0000ing"}
    response = await gateway.post("/api/v1/leads", json=bad)
    assert response.status_code == 400
    keys = {item["key"] for item in response.json()["extra"]}
    assert keys == {"zip", "surprise", "category"}


async def test_oversized_body_gets_413(gateway: AsyncTestClient) -> None:  # type: ignore[type-arg]
    response = await gateway.post(
        "/api/v1/leads",
        content=b'{"external_id": "' + b"x" * 70_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413


async def test_http_metrics_use_the_route_template(gateway: AsyncTestClient) -> None:  # type: ignore[type-arg]
    await gateway.post("/api/v1/leads", json=LEAD)
    metrics = (await gateway.get("/metrics")).text
    assert 'fmhl_http_request_duration_ms_count{method="POST",route="/api/v1/leads",status="202"}' in metrics
    assert "fmhl_leads_submitted_total" in metrics
    assert 'fmhl_jobs_enqueued_total{queue="distribution"}' in metrics
