"""Running one export on the real database: the CSV is the query's rows in order for the requested days, its cells
are spreadsheet-safe, and a finished export is not written again."""

from __future__ import annotations

import csv
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import SQLModel, col

from export_worker.exports import run_export
from libs.db.tables import (
    Assignment,
    ExportKind,
    ExportStatus,
    Lead,
    LeadSource,
    LedgerEntry,
    LedgerKind,
    Provider,
    ReportExport,
    Subscription,
    User,
    UserRole,
)
from libs.messaging.errors import BusinessRuleViolation

pytestmark = pytest.mark.database
DAY = date(2031, 3, 4)


def at(hour: int, day: date = DAY) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


async def new(connection: AsyncConnection, model: type[SQLModel], **values: object) -> uuid.UUID:
    inserted = await connection.execute(insert(model).values(**values).returning(*inspect(model).primary_key))
    return uuid.UUID(str(inserted.scalar_one()))


async def export_request(
    engine: AsyncEngine, kind: ExportKind, provider_id: uuid.UUID, *, requested_by: uuid.UUID | None = None
) -> uuid.UUID:
    async with engine.begin() as connection:
        return await new(connection, ReportExport, kind=kind, provider_id=provider_id, date_from=DAY, date_to=DAY,
                         requested_by=requested_by)  # fmt: skip


def partial_files(directory: Path) -> list[Path]:
    return list(directory.glob(".*.partial"))


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


async def test_a_ledger_statement_lists_the_days_entries_with_a_running_total(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with engine.begin() as connection:
        provider_id = await new(connection, Provider, name="ledger", email="ledger@example.com")
        for kind, amount, when in [
            (LedgerKind.top_up, 1_000, at(9)),
            (LedgerKind.lead_charge, -1_500, at(10)),
            (LedgerKind.adjustment, 700, at(11)),
            (LedgerKind.top_up, 5_000, at(0) - timedelta(microseconds=1)),
            (LedgerKind.top_up, 5_000, at(0, DAY + timedelta(days=1))),
        ]:
            await connection.execute(
                insert(LedgerEntry).values(provider_id=provider_id, kind=kind, amount_cents=amount, created_at=when)
            )
    export_id = await export_request(engine, ExportKind.ledger_statement, provider_id)

    finished = await run_export(engine, export_id, tmp_path, 100)

    rows = read_csv(tmp_path / f"{export_id}.csv")
    assert rows[0] == ["entry_id", "at", "kind", "amount_cents", "assignment_id", "refund_id", "running_total_cents"]
    assert [(row[2], row[3], row[6]) for row in rows[1:]] == [
        ("top_up", "1000", "1000"), ("lead_charge", "-1500", "-500"), ("adjustment", "700", "200"),
    ]  # fmt: skip
    assert (finished.row_count, finished.bytes) == (3, (tmp_path / f"{export_id}.csv").stat().st_size)
    assert partial_files(tmp_path) == []


async def test_an_assignments_export_holds_only_the_providers_rows_with_formulas_neutralised(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    async with engine.begin() as connection:
        source_id = await new(connection, LeadSource, name="s", api_key_hash=f"export-test-{uuid.uuid4()}")
        providers = [await new(connection, Provider, name="=cmd|' /C calc'!A0", email="a@example.com") for _ in "ab"]
        for provider_id in providers:
            subscription_id = await new(connection, Subscription, provider_id=provider_id, category="c",
                                        price_cents=700)  # fmt: skip
            for hour in (14, 9):
                lead_id = await new(connection, Lead, source_id=source_id, external_id=str(uuid.uuid4()),
                                    category="@roofing", zip="94107", contact={})  # fmt: skip
                await new(connection, Assignment, lead_id=lead_id, provider_id=provider_id,
                          subscription_id=subscription_id, price_cents=700, created_at=at(hour))  # fmt: skip
    export_id = await export_request(engine, ExportKind.assignments, providers[0])

    await run_export(engine, export_id, tmp_path, 100)

    header, *rows = read_csv(tmp_path / f"{export_id}.csv")
    assert header == ["assignment_id", "assigned_at", "lead_id", "category", "zip", "provider_id", "provider",
                      "price_cents", "status"]  # fmt: skip
    assert [row[1] for row in rows] == [str(at(9)), str(at(14))]
    assert {row[5] for row in rows} == {str(providers[0])}
    assert {(row[3], row[6], row[7], row[8]) for row in rows} == {
        ("'@roofing", "'=cmd|' /C calc'!A0", "700", "delivered")
    }


async def test_a_finished_export_is_not_written_again(engine: AsyncEngine, tmp_path: Path) -> None:
    email = f"{uuid.uuid4().hex}@example.com"
    async with engine.begin() as connection:
        provider_id = await new(connection, Provider, name="again", email="again@example.com")
        requester = await new(connection, User, email=email, role=UserRole.admin, password_hash="x")
    export_id = await export_request(engine, ExportKind.ledger_statement, provider_id, requested_by=requester)
    first = await run_export(engine, export_id, tmp_path, 100)
    written = (tmp_path / f"{export_id}.csv").stat().st_mtime_ns

    again = await run_export(engine, export_id, tmp_path, 100)

    assert not first.already_done
    assert again.already_done
    assert (again.row_count, again.bytes, again.requested_email) == (first.row_count, first.bytes, email)
    assert (tmp_path / f"{export_id}.csv").stat().st_mtime_ns == written
    async with engine.connect() as connection:
        status = await connection.scalar(select(col(ReportExport.status)).where(col(ReportExport.id) == export_id))
    assert status == ExportStatus.ready


async def test_an_export_that_does_not_exist_is_a_business_rule_violation(engine: AsyncEngine, tmp_path: Path) -> None:
    with pytest.raises(BusinessRuleViolation):
        await run_export(engine, uuid.uuid4(), tmp_path, 100)
