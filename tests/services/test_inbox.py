"""The inbox: newest first, keyset pages that never skip or repeat, filters, and bounded page sizes."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select
from sqlmodel import col

from libs.db.tables import Assignment, AssignmentStatus
from tests.services.conftest import Pipeline, eventually, metric_value


@pytest.fixture
async def provider_with_five_leads(pipeline: Pipeline) -> tuple[uuid.UUID, dict[str, str]]:
    admin = await pipeline.admin_headers()
    kind = f"inbox-{uuid.uuid4().hex[:8]}"
    provider_id = await pipeline.provider(admin, category=kind, zips=["94107"], price_cents=100, balance_cents=500)
    source = await pipeline.lead_source(trusted=True)
    for _ in range(5):
        await pipeline.submit(source, category=kind)

    async def five() -> bool:
        async with pipeline.engine.connect() as connection:
            assigned = await connection.scalar(select(func.count()).where(col(Assignment.provider_id) == provider_id))
        return bool(assigned == 5)

    await eventually(five)
    return provider_id, await pipeline.provider_headers(provider_id)


async def test_pages_follow_each_other_without_gaps_or_repeats(
    pipeline: Pipeline, provider_with_five_leads: tuple[uuid.UUID, dict[str, str]]
) -> None:
    provider_id, headers = provider_with_five_leads
    queries_before = metric_value(await pipeline.metrics(pipeline.gateway), "fmhl_inbox_query_duration_ms_count")
    seen: list[dict[str, str]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await pipeline.gateway.get(f"/api/v1/providers/{provider_id}/inbox", params=params, headers=headers)
        assert page.status_code == 200, page.text
        seen += page.json()["items"]
        cursor = page.json()["next_cursor"]
        pages += 1
        if cursor is None:
            break
    assert pages == 3
    assert len({item["assignment_id"] for item in seen}) == 5
    times = [item["assigned_at"] for item in seen]
    assert times == sorted(times, reverse=True)
    queries_after = metric_value(await pipeline.metrics(pipeline.gateway), "fmhl_inbox_query_duration_ms_count")
    assert queries_after - queries_before == pages


async def test_filters_by_status(
    pipeline: Pipeline, provider_with_five_leads: tuple[uuid.UUID, dict[str, str]]
) -> None:
    provider_id, headers = provider_with_five_leads
    refunded = await pipeline.gateway.get(
        f"/api/v1/providers/{provider_id}/inbox", params={"status": AssignmentStatus.refunded}, headers=headers
    )
    assert refunded.json()["items"] == []
    delivered = await pipeline.gateway.get(
        f"/api/v1/providers/{provider_id}/inbox",
        params={"status": AssignmentStatus.delivered, "from": "2020-01-01"},
        headers=headers,
    )
    assert [item["status"] for item in delivered.json()["items"]] == [AssignmentStatus.delivered] * 5


async def test_a_date_range_ending_before_the_leads_came_shows_none(
    pipeline: Pipeline, provider_with_five_leads: tuple[uuid.UUID, dict[str, str]]
) -> None:
    provider_id, headers = provider_with_five_leads
    before = await pipeline.gateway.get(
        f"/api/v1/providers/{provider_id}/inbox", params={"from": "2020-01-01", "to": "2020-12-31"}, headers=headers
    )
    assert before.status_code == 200
    assert before.json()["items"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 101}, "limit"), ({"cursor": "not-a-cursor"}, "cursor"), ({"status": "lost"}, "status"),
     ({"from": "yesterday"}, "from")],
)  # fmt: skip
async def test_bad_parameters_get_400_naming_them(
    pipeline: Pipeline,
    provider_with_five_leads: tuple[uuid.UUID, dict[str, str]],
    params: dict[str, str | int],
    field: str,
) -> None:
    provider_id, headers = provider_with_five_leads
    response = await pipeline.gateway.get(f"/api/v1/providers/{provider_id}/inbox", params=params, headers=headers)
    assert response.status_code == 400
    assert field in response.text
