"""One correlation id follows a lead from the HTTP request, through the broker, into the worker's logs;
bad input at the HTTP edge is answered 4xx naming the field."""

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from libs.logging import JsonFormatter
from tests.services.conftest import Pipeline, eventually

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


def events_with(stream: io.StringIO, correlation_id: str) -> list[dict[str, object]]:
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["correlation_id"] == correlation_id]


async def test_a_lead_carries_one_correlation_id_from_http_to_the_worker(
    pipeline: Pipeline, log_lines: io.StringIO
) -> None:
    source = await pipeline.lead_source(trusted=True)
    response = await pipeline.gateway.post(
        "/api/v1/leads", json=LEAD | {"external_id": "cid-1"}, headers=source | {"X-Correlation-ID": "cid-e2e-1"}
    )
    assert response.status_code == 202, response.text
    assert response.headers["x-correlation-id"] == "cid-e2e-1"
    lead_id = response.json()["lead_id"]

    async def the_worker_logged_it() -> bool:
        return any(line["logger"] == "distribution_worker" for line in events_with(log_lines, "cid-e2e-1"))

    await eventually(the_worker_logged_it, timeout=10)
    lines = events_with(log_lines, "cid-e2e-1")
    received = next(line for line in lines if line["logger"] == "distribution_worker")
    published = next(line for line in lines if line["event"] == "lead.submitted")
    assert received["metadata"]["lead_id"] == lead_id  # type: ignore[index]
    assert received["trace_id"] == published["trace_id"]


async def test_without_a_correlation_id_the_gateway_makes_one(pipeline: Pipeline) -> None:
    response = await pipeline.gateway.get("/health/live")
    assert len(response.headers["x-correlation-id"]) == 36


async def test_a_lead_without_an_api_key_is_401(pipeline: Pipeline) -> None:
    assert (await pipeline.gateway.post("/api/v1/leads", json=LEAD)).status_code == 401
    wrong = await pipeline.gateway.post("/api/v1/leads", json=LEAD, headers={"X-API-Key": "fmhl_nope"})
    assert wrong.status_code == 401


async def test_a_bad_lead_gets_400_naming_each_field(pipeline: Pipeline) -> None:
    source = await pipeline.lead_source()
    bad = {**LEAD, "zip": "9410", "surprise": 1, "category": "roof\u0000ing"}
    response = await pipeline.gateway.post("/api/v1/leads", json=bad, headers=source)
    assert response.status_code == 400
    keys = {item["key"] for item in response.json()["extra"]}
    assert keys == {"zip", "surprise", "category"}


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2]", b'{"external_id": ' + b"9" * 5000 + b"}", b"[" * 100_000],
    ids=["malformed", "not-an-object", "huge-number", "deep-nesting"],
)
async def test_unparseable_bodies_get_400_never_500(pipeline: Pipeline, body: bytes) -> None:
    source = await pipeline.lead_source()
    response = await pipeline.gateway.post(
        "/api/v1/leads", content=body, headers=source | {"content-type": "application/json"}
    )
    assert response.status_code in (400, 413), response.text


async def test_an_oversized_body_gets_413(pipeline: Pipeline) -> None:
    source = await pipeline.lead_source()
    response = await pipeline.gateway.post(
        "/api/v1/leads",
        content=b'{"external_id": "' + b"x" * 70_000 + b'"}',
        headers=source | {"content-type": "application/json"},
    )
    assert response.status_code == 413


async def test_http_metrics_use_the_route_template(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    await pipeline.gateway.get("/api/v1/providers/6b0f6a7e-47b4-4fd9-9a1f-0a4c2c5e9f00/balance", headers=admin)
    metrics = await pipeline.metrics(pipeline.gateway)
    assert 'route="/api/v1/providers/{provider_id}/balance",status="404"' in metrics
    assert "6b0f6a7e" not in metrics
