"""The lead pipeline end to end: submit -> approve -> distribute and charge -> emails; refunds; exports."""

from __future__ import annotations

import csv
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import Executable, func, insert, select
from sqlmodel import col

from distribution_worker.main import build as build_distribution
from distribution_worker.settings import Settings as DistributionSettings
from export_worker.exports import ExportFailed, run_export
from libs.contracts import LeadApproved
from libs.db.tables import (
    Assignment,
    AssignmentStatus,
    ExportKind,
    ExportStatus,
    Lead,
    LeadStatus,
    LedgerEntry,
    LedgerKind,
    PausedReason,
    Provider,
    ReportExport,
    Subscription,
    SubscriptionStatus,
)
from libs.messaging import headers as h
from libs.messaging.broker import EVENTS
from tests.services.conftest import DeadLetters, Pipeline, built_app, eventually, metric_value, publisher_for


def category() -> str:
    return f"roofing-{uuid.uuid4().hex[:8]}"


async def value(pipeline: Pipeline, statement: Executable) -> Any:
    async with pipeline.engine.connect() as connection:
        return await connection.scalar(statement)


async def lead_status(pipeline: Pipeline, lead_id: str) -> LeadStatus:
    status: LeadStatus = await value(pipeline, select(col(Lead.status)).where(col(Lead.id) == uuid.UUID(lead_id)))
    return status


async def balance_of(pipeline: Pipeline, provider_id: uuid.UUID) -> int:
    balance: int = await value(pipeline, select(col(Provider.balance_cents)).where(col(Provider.id) == provider_id))
    return balance


async def ledger_sum(pipeline: Pipeline, provider_id: uuid.UUID) -> int:
    total = await value(
        pipeline, select(func.sum(col(LedgerEntry.amount_cents))).where(col(LedgerEntry.provider_id) == provider_id)
    )
    return int(total)


async def charges_of(pipeline: Pipeline, provider_id: uuid.UUID) -> list[int]:
    async with pipeline.engine.connect() as connection:
        amounts = await connection.scalars(
            select(col(LedgerEntry.amount_cents)).where(
                col(LedgerEntry.provider_id) == provider_id, col(LedgerEntry.kind) == LedgerKind.lead_charge
            )
        )
        return list(amounts)


async def leads_of(pipeline: Pipeline, category: str, status: LeadStatus) -> set[uuid.UUID]:
    async with pipeline.engine.connect() as connection:
        ids = await connection.scalars(
            select(col(Lead.id)).where(col(Lead.category) == category, col(Lead.status) == status)
        )
        return set(ids)


async def assigned_leads(pipeline: Pipeline, provider_id: uuid.UUID) -> set[uuid.UUID]:
    async with pipeline.engine.connect() as connection:
        return set(
            await connection.scalars(select(col(Assignment.lead_id)).where(col(Assignment.provider_id) == provider_id))
        )


async def counts_grew(pipeline: Pipeline, before: str, **grown_by: float) -> bool:
    """Whether each of the distribution-worker's metrics grew by exactly the given amount since `before`."""
    after = await pipeline.metrics(pipeline.workers["distribution"])
    return all(metric_value(after, name) - metric_value(before, name) == by for name, by in grown_by.items())


async def test_approved_lead_goes_to_the_matching_providers_charged_and_emailed(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    kind = category()
    emails = [f"p{i}-{uuid.uuid4().hex[:6]}@example.com" for i in range(5)]
    matching = [
        await pipeline.provider(admin, category=kind, zips=["94107"], price_cents=2500, balance_cents=10_000,
                                email=emails[i])
        for i in range(4)
    ]  # fmt: skip
    elsewhere = await pipeline.provider(
        admin, category=kind, zips=["10001"], price_cents=2500, balance_cents=10_000, email=emails[4]
    )
    before = await pipeline.metrics(pipeline.gateway)
    worker_before = await pipeline.metrics(pipeline.workers["distribution"])
    source = await pipeline.lead_source()

    lead_id = await pipeline.submit(source, category=kind)
    assert await lead_status(pipeline, lead_id) == LeadStatus.submitted
    approved = await pipeline.gateway.post(f"/api/v1/leads/{lead_id}/approve", headers=admin)
    assert approved.status_code == 202, approved.text

    async def distributed() -> bool:
        return await lead_status(pipeline, lead_id) == LeadStatus.distributed

    await eventually(distributed)
    async with pipeline.engine.connect() as connection:
        assigned = list(
            await connection.scalars(
                select(col(Assignment.provider_id)).where(col(Assignment.lead_id) == uuid.UUID(lead_id))
            )
        )
    assert len(assigned) == 3  # at most N = 3, although four providers match
    assert set(assigned) <= set(matching)
    assert elsewhere not in assigned
    for provider_id in assigned:
        assert await balance_of(pipeline, provider_id) == 7500
        assert await charges_of(pipeline, provider_id) == [-2500]
    unassigned = set(matching) - set(assigned)
    assert [await balance_of(pipeline, provider_id) for provider_id in unassigned] == [10_000]
    charged_emails = {emails[matching.index(p)] for p in assigned}

    async def mailed() -> bool:
        return all(pipeline.mail.to(address) for address in charged_emails)

    await eventually(mailed)
    assert all(pipeline.mail.to(address)[0]["Subject"] == "New lead assigned to you" for address in charged_emails)
    after = await pipeline.metrics(pipeline.gateway)
    assert metric_value(after, "fmhl_leads_submitted_total") - metric_value(before, "fmhl_leads_submitted_total") == 1
    assert metric_value(after, "fmhl_leads_approved_total") - metric_value(before, "fmhl_leads_approved_total") == 1
    grown = {"fmhl_assignments_created_total": 3, "fmhl_distribution_duration_ms_count": 1,
             "fmhl_billing_operation_duration_ms_count": 3}  # fmt: skip
    await eventually(lambda: counts_grew(pipeline, worker_before, **grown))


async def test_a_trusted_sources_lead_is_distributed_without_an_admin(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    kind = category()
    await pipeline.provider(admin, category=kind, zips=["94107"], price_cents=1000, balance_cents=1000)
    lead_id = await pipeline.submit(await pipeline.lead_source(trusted=True), category=kind)

    async def distributed() -> bool:
        return await lead_status(pipeline, lead_id) == LeadStatus.distributed

    await eventually(distributed)


async def test_a_lead_nobody_matches_ends_unassigned(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    lead_id = await pipeline.submit(await pipeline.lead_source(), category=category())
    assert (await pipeline.gateway.post(f"/api/v1/leads/{lead_id}/approve", headers=admin)).status_code == 202

    async def unassigned() -> bool:
        return await lead_status(pipeline, lead_id) == LeadStatus.unassigned

    await eventually(unassigned)


async def test_a_provider_that_cannot_pay_is_skipped_and_paused(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    kind = category()
    poor = await pipeline.provider(admin, category=kind, zips=["94107"], price_cents=5000, balance_cents=4999)
    rich = await pipeline.provider(admin, category=kind, zips=["94107"], price_cents=5000, balance_cents=5000)
    before = metric_value(
        await pipeline.metrics(pipeline.workers["distribution"]), "fmhl_assignments_skipped_insufficient_balance_total"
    )
    lead_id = await pipeline.submit(await pipeline.lead_source(trusted=True), category=kind)

    async def distributed() -> bool:
        return await lead_status(pipeline, lead_id) == LeadStatus.distributed

    await eventually(distributed)
    assert await balance_of(pipeline, poor) == 4999
    assert await balance_of(pipeline, rich) == 0
    async with pipeline.engine.connect() as connection:
        paused = (
            await connection.execute(
                select(col(Subscription.status), col(Subscription.paused_reason)).where(
                    col(Subscription.provider_id) == poor
                )
            )
        ).one()
    assert (paused.status, paused.paused_reason) == (SubscriptionStatus.paused, PausedReason.insufficient_balance)
    after = metric_value(
        await pipeline.metrics(pipeline.workers["distribution"]), "fmhl_assignments_skipped_insufficient_balance_total"
    )
    assert after - before == 1


async def test_low_balance_email_when_a_charge_crosses_the_threshold(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    kind = category()
    address = f"low-{uuid.uuid4().hex[:6]}@example.com"
    await pipeline.provider(admin, category=kind, zips=["94107"], price_cents=3000, balance_cents=5000,
                            email=address, low_balance_threshold_cents=4000)  # fmt: skip
    await pipeline.submit(await pipeline.lead_source(trusted=True), category=kind)

    async def two_mails() -> bool:
        return len(pipeline.mail.to(address)) == 2

    await eventually(two_mails)
    assert {m["Subject"] for m in pipeline.mail.to(address)} == {
        "New lead assigned to you",
        "Your balance is running low",
    }


async def test_bad_lead_refund_keeps_ledger_and_balance_in_agreement(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    kind = category()
    address = f"refund-{uuid.uuid4().hex[:6]}@example.com"
    provider_id = await pipeline.provider(
        admin, category=kind, zips=["94107"], price_cents=1500, balance_cents=5000, email=address
    )
    provider = await pipeline.provider_headers(provider_id)
    lead_id = await pipeline.submit(await pipeline.lead_source(trusted=True), category=kind)

    async def distributed() -> bool:
        return await lead_status(pipeline, lead_id) == LeadStatus.distributed

    await eventually(distributed)
    before = await pipeline.metrics(pipeline.gateway)
    inbox = (await pipeline.gateway.get(f"/api/v1/providers/{provider_id}/inbox", headers=provider)).json()
    [item] = inbox["items"]
    reported = await pipeline.gateway.post(
        f"/api/v1/assignments/{item['assignment_id']}/bad-lead-reports", json={"reason": "wrong number"},
        headers=provider,
    )  # fmt: skip
    assert reported.status_code == 201, reported.text
    again = await pipeline.gateway.post(
        f"/api/v1/assignments/{item['assignment_id']}/bad-lead-reports", json={"reason": "still wrong"},
        headers=provider,
    )  # fmt: skip
    assert again.status_code == 409
    decision = await pipeline.gateway.post(f"/api/v1/bad-lead-reports/{reported.json()['id']}/approve", headers=admin)
    assert decision.status_code == 200, decision.text
    assert decision.json()["balance_cents"] == 5000
    twice = await pipeline.gateway.post(f"/api/v1/bad-lead-reports/{reported.json()['id']}/approve", headers=admin)
    assert twice.status_code == 409

    after = await pipeline.metrics(pipeline.gateway)
    for counter in ("fmhl_bad_leads_reported_total", "fmhl_refunds_approved_total"):
        assert metric_value(after, counter) - metric_value(before, counter) == 1, counter
    balance = (await pipeline.gateway.get(f"/api/v1/providers/{provider_id}/balance", headers=provider)).json()
    assert balance["balance_cents"] == await ledger_sum(pipeline, provider_id) == 5000
    refunded = await pipeline.gateway.get(
        f"/api/v1/providers/{provider_id}/inbox", params={"status": AssignmentStatus.refunded}, headers=provider
    )
    assert [entry["assignment_id"] for entry in refunded.json()["items"]] == [item["assignment_id"]]

    async def refund_mail() -> bool:
        return any(m["Subject"] == "Your bad-lead report was approved" for m in pipeline.mail.to(address))

    await eventually(refund_mail)


async def test_export_csv_equals_the_query_and_escapes_formula_cells(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    kind = "=HYPERLINK(evil)" + uuid.uuid4().hex[:4]
    provider_id = await pipeline.provider(admin, category=kind, zips=["94107"], price_cents=700, balance_cents=7000)
    source = await pipeline.lead_source(trusted=True)
    leads = [await pipeline.submit(source, category=kind) for _ in range(3)]

    async def all_distributed() -> bool:
        return all([await lead_status(pipeline, lead) == "distributed" for lead in leads])

    await eventually(all_distributed)
    today = (await value(pipeline, select(func.current_date()))).isoformat()
    requested = await pipeline.gateway.post(
        "/api/v1/reports/exports",
        json={"kind": ExportKind.assignments, "date_from": today, "date_to": today, "provider_id": str(provider_id)},
        headers=admin,
    )
    assert requested.status_code == 202, requested.text
    export_id = requested.json()["id"]

    async def ready() -> bool:
        status = await pipeline.gateway.get(f"/api/v1/reports/exports/{export_id}", headers=admin)
        return bool(status.json()["status"] == ExportStatus.ready)

    await eventually(ready)
    download = await pipeline.gateway.get(f"/api/v1/reports/exports/{export_id}/download", headers=admin)
    assert download.status_code == 200
    rows = list(csv.reader(io.StringIO(download.text)))
    assert rows[0][:3] == ["assignment_id", "assigned_at", "lead_id"]
    async with pipeline.engine.connect() as connection:
        expected = (
            await connection.execute(
                select(col(Assignment.id), col(Assignment.lead_id))
                .where(col(Assignment.provider_id) == provider_id)
                .order_by(col(Assignment.created_at), col(Assignment.id))
            )
        ).all()
    header = rows[0]
    exported = [dict(zip(header, row, strict=True)) for row in rows[1:]]
    assert [(row["assignment_id"], row["lead_id"]) for row in exported] == [
        (str(assignment.id), str(assignment.lead_id)) for assignment in expected
    ]
    assert {row["category"] for row in exported} == {"'" + kind}
    status = (await pipeline.gateway.get(f"/api/v1/reports/exports/{export_id}", headers=admin)).json()
    assert status["row_count"] == 3
    assert status["bytes"] == len(download.content)


async def test_the_same_approval_delivered_twice_charges_once(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    kind = category()
    provider_id = await pipeline.provider(admin, category=kind, zips=["94107"], price_cents=1000, balance_cents=5000)
    lead_id = await pipeline.submit(await pipeline.lead_source(), category=kind)
    assert (await pipeline.gateway.post(f"/api/v1/leads/{lead_id}/approve", headers=admin)).status_code == 202
    # A redelivery of the very same message (same message id) and a second publish of the event.
    publisher, broker = await publisher_for(pipeline.service_env["RABBITMQ_URL"])
    event = LeadApproved(lead_id=uuid.UUID(lead_id), approved_by="test")
    await publisher.publish(event, message_id=f"lead.approved:{lead_id}")
    await publisher.publish(event, message_id=f"lead.approved:{lead_id}:replay")
    await broker.stop()

    async def distributed() -> bool:
        return await lead_status(pipeline, lead_id) == LeadStatus.distributed

    await eventually(distributed)
    await eventually(lambda: _queue_drained(pipeline))
    assert await assigned_leads(pipeline, provider_id) == {uuid.UUID(lead_id)}
    assert await balance_of(pipeline, provider_id) == 4000
    assert await charges_of(pipeline, provider_id) == [-1000]


async def _queue_drained(pipeline: Pipeline) -> bool:
    body = (await pipeline.workers["distribution"].get("/health/ready")).json()
    return bool(body["checks"]["queue"]["depth"] == 0)


async def test_the_same_post_twice_makes_one_lead(pipeline: Pipeline) -> None:
    source = await pipeline.lead_source()
    lead = {"external_id": f"ext-{uuid.uuid4().hex}", "category": category(), "zip": "94107",
            "contact": {"name": "Ada", "email": "ada@example.com", "phone": "+1 415 555 0100"}}  # fmt: skip
    first = await pipeline.gateway.post("/api/v1/leads", json=lead, headers=source)
    second = await pipeline.gateway.post("/api/v1/leads", json=lead, headers=source)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    keyed = {**lead, "external_id": f"ext-{uuid.uuid4().hex}"}
    third = await pipeline.gateway.post("/api/v1/leads", json=keyed, headers=source | {"Idempotency-Key": "k-1"})
    retry = {**keyed, "external_id": f"ext-{uuid.uuid4().hex}"}
    fourth = await pipeline.gateway.post("/api/v1/leads", json=retry, headers=source | {"Idempotency-Key": "k-1"})
    assert third.json() == fourth.json()
    async with pipeline.engine.connect() as connection:
        made = list(
            await connection.scalars(select(col(Lead.external_id)).where(col(Lead.category) == lead["category"]))
        )
    assert sorted(made) == sorted([str(lead["external_id"]), str(keyed["external_id"])])


async def test_a_provider_funded_for_60_leads_gets_exactly_60_of_100(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    kind = category()
    provider_id = await pipeline.provider(admin, category=kind, zips=["94107"], price_cents=100, balance_cents=6000)
    second_replica = built_app(build_distribution, DistributionSettings, pipeline.service_env)
    source = await pipeline.lead_source(trusted=True)
    async with AsyncTestClient(second_replica):
        submitted = {uuid.UUID(await pipeline.submit(source, category=kind)) for _ in range(100)}

        async def all_handled() -> bool:
            handled = await leads_of(pipeline, kind, LeadStatus.distributed) | await leads_of(
                pipeline, kind, LeadStatus.unassigned
            )
            return handled == submitted

        await eventually(all_handled, timeout=90)
    distributed = await leads_of(pipeline, kind, LeadStatus.distributed)
    # Exactly the leads it was charged for are the distributed ones; the rest found nobody who could pay.
    assert await assigned_leads(pipeline, provider_id) == distributed
    assert len(distributed) == 60
    assert await leads_of(pipeline, kind, LeadStatus.unassigned) == submitted - distributed
    assert await balance_of(pipeline, provider_id) == 0
    assert await ledger_sum(pipeline, provider_id) == 0
    status = await value(pipeline, select(col(Subscription.status)).where(col(Subscription.provider_id) == provider_id))
    assert status == SubscriptionStatus.paused


async def test_a_bad_message_sent_straight_to_a_worker_is_dead_lettered_and_the_next_lead_flows(
    pipeline: Pipeline, dead_letters: DeadLetters
) -> None:
    admin = await pipeline.admin_headers()
    kind = category()
    await pipeline.provider(admin, category=kind, zips=["94107"], price_cents=100, balance_cents=100)
    publisher, broker = await publisher_for(pipeline.service_env["RABBITMQ_URL"])
    await publisher.publish_raw(
        b'{"lead_id": "not-a-uuid"}', exchange=EVENTS, routing_key="lead.approved", message_id="bad-approval-1",
        correlation_id="bad-approval-1", headers={}, message_type="lead.approved",
    )  # fmt: skip
    unknown_lead = LeadApproved(lead_id=uuid.uuid4(), approved_by="nobody")
    unknown_id = await publisher.publish(unknown_lead)
    await broker.stop()
    lead_id = await pipeline.submit(await pipeline.lead_source(trusted=True), category=kind)

    malformed = (await dead_letters.for_message("bad-approval-1")).headers or {}
    assert malformed[h.ERROR_TYPE] == "SchemaMismatch"
    assert "lead_id" in str(malformed[h.ERROR_MESSAGE])
    missing = (await dead_letters.for_message(unknown_id)).headers or {}
    assert missing[h.ERROR_TYPE] == "BusinessRuleViolation"

    async def distributed() -> bool:
        return await lead_status(pipeline, lead_id) == LeadStatus.distributed

    await eventually(distributed)


async def test_an_export_that_cannot_be_written_ends_failed_with_the_reason(pipeline: Pipeline, tmp_path: Path) -> None:
    admin = await pipeline.admin_headers()
    provider_id = await pipeline.provider(admin, category=category(), zips=["94107"], price_cents=1, balance_cents=0)
    async with pipeline.engine.begin() as connection:
        export_id = (
            await connection.execute(
                insert(ReportExport)
                .values(kind=ExportKind.ledger_statement, provider_id=provider_id, date_from=func.current_date(),
                        date_to=func.current_date())
                .returning(col(ReportExport.id))
            )
        ).scalar_one()  # fmt: skip
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("occupied")

    with pytest.raises(ExportFailed):
        await run_export(pipeline.engine, export_id, not_a_directory, 100)
    async with pipeline.engine.connect() as connection:
        export = (
            await connection.execute(
                select(col(ReportExport.status), col(ReportExport.error)).where(col(ReportExport.id) == export_id)
            )
        ).one()
    assert export.status == ExportStatus.failed
    assert "NotADirectoryError" in export.error or "FileExistsError" in export.error


async def test_the_openapi_schema_lists_every_route(pipeline: Pipeline) -> None:
    schema = (await pipeline.gateway.get("/schema/openapi.json")).json()
    assert {"/api/v1/leads", "/api/v1/auth/token", "/api/v1/providers/{provider_id}/inbox"} <= schema["paths"].keys()
    assert {"bearer", "apiKey"} <= schema["components"]["securitySchemes"].keys()
