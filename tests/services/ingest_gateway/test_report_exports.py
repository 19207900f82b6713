"""Exports: whose data an export may hold, who may see it, when it downloads; a request is queued or not made."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from litestar.exceptions import PermissionDeniedException
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from ingest_gateway import exports
from ingest_gateway.errors import Conflict, Invalid, NotFound
from ingest_gateway.exports import Export, ExportRequest
from libs.auth import Principal
from libs.contracts import ExportReport
from libs.db.tables import ExportKind, ExportStatus, ReportExport
from tests.services.ingest_gateway.conftest import staged

DAY = date(2030, 1, 1)
ADMIN = Principal(subject=str(uuid.uuid4()), role="admin", provider_id=None, amr=("pwd", "otp"))


def provider(provider_id: uuid.UUID) -> Principal:
    return Principal(subject=str(uuid.uuid4()), role="provider", provider_id=provider_id, amr=("pwd",))


def wanted(kind: ExportKind = ExportKind.assignments, provider_id: uuid.UUID | None = None) -> ExportRequest:
    return ExportRequest(kind=kind, date_from=DAY, date_to=DAY, provider_id=provider_id)


def export(status: ExportStatus = ExportStatus.ready, provider_id: uuid.UUID | None = None) -> Export:
    return Export(id=uuid.uuid4(), kind=ExportKind.assignments, status=status, provider_id=provider_id,
                  row_count=None, bytes=None, duration_ms=None, error=None, created_at=datetime.now(UTC),
                  finished_at=None)  # fmt: skip


def test_a_providers_export_holds_its_own_data_whatever_it_names() -> None:
    mine = uuid.uuid4()
    assert exports.scope(provider(mine), wanted()) == mine
    assert exports.scope(provider(mine), wanted(provider_id=mine)) == mine


def test_a_provider_asking_for_another_providers_data_is_not_found() -> None:
    with pytest.raises(NotFound):
        exports.scope(provider(uuid.uuid4()), wanted(provider_id=uuid.uuid4()))


def test_an_admin_exports_everyones_assignments_or_one_providers() -> None:
    chosen = uuid.uuid4()
    assert exports.scope(ADMIN, wanted()) is None
    assert exports.scope(ADMIN, wanted(provider_id=chosen)) == chosen


def test_a_ledger_statement_needs_a_provider() -> None:
    with pytest.raises(Invalid) as refused:
        exports.scope(ADMIN, wanted(ExportKind.ledger_statement))
    assert (refused.value.field, refused.value.message) == ("provider_id", "required")


def test_the_dates_must_be_in_order() -> None:
    with pytest.raises(ValueError, match="date_to must not be before date_from"):
        ExportRequest(kind=ExportKind.assignments, date_from=DAY, date_to=date(2029, 12, 31))


def test_an_admin_sees_every_export() -> None:
    exports.ensure_visible(ADMIN, export(provider_id=None))
    exports.ensure_visible(ADMIN, export(provider_id=uuid.uuid4()))


def test_a_provider_sees_its_own_exports_only() -> None:
    mine = uuid.uuid4()
    exports.ensure_visible(provider(mine), export(provider_id=mine))
    with pytest.raises(PermissionDeniedException):
        exports.ensure_visible(provider(mine), export(provider_id=uuid.uuid4()))
    with pytest.raises(NotFound):
        exports.ensure_visible(provider(mine), export(provider_id=None))


@pytest.mark.parametrize("status", [ExportStatus.pending, ExportStatus.running, ExportStatus.failed])
def test_only_a_ready_export_downloads(status: ExportStatus) -> None:
    exports.ensure_ready(export(ExportStatus.ready))
    with pytest.raises(Conflict, match=f"export is {status.value}, not ready"):
        exports.ensure_ready(export(status))


async def test_a_ready_export_whose_file_is_gone_is_not_found(
    engine: AsyncEngine, provider_id: uuid.UUID, tmp_path: Path
) -> None:
    async with engine.begin() as connection:
        export_id = (await connection.execute(
            insert(ReportExport).returning(col(ReportExport.id)),
            {"kind": ExportKind.assignments, "provider_id": provider_id, "status": ExportStatus.ready},
        )).scalar_one()  # fmt: skip
    with pytest.raises(NotFound, match="the export file is gone"):
        await exports.download(engine, tmp_path, export_id, ADMIN)
    (tmp_path / f"{export_id}.csv").write_text("assignment_id\n")
    ready = await exports.download(engine, tmp_path, export_id, provider(provider_id))
    assert (ready.path, ready.filename) == (tmp_path / f"{export_id}.csv", f"assignments-{export_id}.csv")


async def test_an_export_for_an_unknown_provider_is_not_made(engine: AsyncEngine, admin: uuid.UUID) -> None:
    caller = Principal(subject=str(admin), role="admin", provider_id=None, amr=("pwd", "otp"))
    with pytest.raises(NotFound):
        await exports.request(engine, caller, wanted(provider_id=uuid.uuid4()))
    assert await requested_by(engine, admin) == []


async def test_an_export_is_queued_with_its_message_staged(
    engine: AsyncEngine, admin: uuid.UUID, provider_id: uuid.UUID
) -> None:
    caller = Principal(subject=str(admin), role="admin", provider_id=None, amr=("pwd", "otp"))
    export = await exports.request(engine, caller, wanted(provider_id=provider_id))
    assert await requested_by(engine, admin) == [export.id]
    [(message_type, body)] = await staged(engine, f"report.export:{export.id}")
    assert (message_type, ExportReport.model_validate_json(body)) == (
        "report.export",
        ExportReport(export_id=export.id),
    )


async def requested_by(engine: AsyncEngine, user_id: uuid.UUID) -> list[uuid.UUID]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(col(ReportExport.id)).where(col(ReportExport.requested_by) == user_id))
        return list(rows.scalars())
