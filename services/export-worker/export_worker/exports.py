"""Running one export: the query streams through a server-side cursor into a temporary file, which is renamed
into place only when complete, so a half-written file is never downloadable. Memory stays flat."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Date, Select, Update, Uuid, bindparam, cast, func, or_, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from export_worker.csv_safety import safe_cell
from libs.db.tables import Assignment, ExportKind, ExportStatus, Lead, LedgerEntry, Provider, ReportExport, User
from libs.messaging.errors import BusinessRuleViolation

# The export's dates are whole days: from the first moment of date_from to the last of date_to.
_FROM = cast(bindparam("date_from"), Date)
_UNTIL = cast(bindparam("date_to"), Date) + 1
_PROVIDER = cast(bindparam("provider_id"), Uuid)

# Each query's column labels are the CSV header.
QUERIES: dict[ExportKind, Select[*tuple[Any, ...]]] = {
    ExportKind.assignments: (
        select(
            col(Assignment.id).label("assignment_id"),
            col(Assignment.created_at).label("assigned_at"),
            col(Assignment.lead_id),
            col(Lead.category),
            col(Lead.zip),
            col(Assignment.provider_id),
            col(Provider.name).label("provider"),
            col(Assignment.price_cents),
            col(Assignment.status),
        )
        .join(Lead, col(Lead.id) == col(Assignment.lead_id))
        .join(Provider, col(Provider.id) == col(Assignment.provider_id))
        .where(
            col(Assignment.created_at) >= _FROM,
            col(Assignment.created_at) < _UNTIL,
            or_(_PROVIDER.is_(None), col(Assignment.provider_id) == _PROVIDER),
        )
        .order_by(col(Assignment.created_at), col(Assignment.id))
    ),
    ExportKind.ledger_statement: (
        select(
            col(LedgerEntry.id).label("entry_id"),
            col(LedgerEntry.created_at).label("at"),
            col(LedgerEntry.kind),
            col(LedgerEntry.amount_cents),
            col(LedgerEntry.assignment_id),
            col(LedgerEntry.refund_id),
            func.sum(col(LedgerEntry.amount_cents))
            .over(order_by=(col(LedgerEntry.created_at), col(LedgerEntry.id)))
            .label("running_total_cents"),
        )
        .where(
            col(LedgerEntry.provider_id) == _PROVIDER,
            col(LedgerEntry.created_at) >= _FROM,
            col(LedgerEntry.created_at) < _UNTIL,
        )
        .order_by(col(LedgerEntry.created_at), col(LedgerEntry.id))
    ),
}

REQUEST = (
    select(
        col(ReportExport.kind),
        col(ReportExport.status),
        col(ReportExport.provider_id),
        col(ReportExport.date_from),
        col(ReportExport.date_to),
        col(ReportExport.row_count),
        col(ReportExport.bytes),
        col(ReportExport.duration_ms),
        col(User.email),
    )
    .outerjoin(User, col(User.id) == col(ReportExport.requested_by))
    .where(col(ReportExport.id) == bindparam("export_id"))
)

_THIS_EXPORT = update(ReportExport).where(col(ReportExport.id) == bindparam("export_id"))
MARK_RUNNING = _THIS_EXPORT.values(status=ExportStatus.running, error=None)
MARK_FAILED = _THIS_EXPORT.values(status=ExportStatus.failed, error=bindparam("error"), finished_at=func.now())
MARK_READY = _THIS_EXPORT.values(
    status=ExportStatus.ready,
    row_count=bindparam("row_count"),
    bytes=bindparam("bytes"),
    duration_ms=bindparam("duration_ms"),
    file_path=bindparam("file_path"),
    finished_at=func.now(),
)


@dataclass(frozen=True)
class Finished:
    export_id: uuid.UUID
    row_count: int
    bytes: int
    duration_ms: int
    requested_email: str | None
    already_done: bool = False


class ExportFailed(BusinessRuleViolation):
    """The export cannot complete (disk full, query refused); the row says why."""


class _CsvFile:
    """Blocking file work, run in a thread so the event loop keeps serving health checks."""

    def __init__(self, path: Path) -> None:
        self.handle: IO[str] = path.open("w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.handle)

    def write(self, rows: list[list[str]]) -> None:
        self.writer.writerows(rows)

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()


async def _mark(engine: AsyncEngine, statement: Update, **values: object) -> None:
    async with engine.begin() as connection:
        await connection.execute(statement, values)


def _discard(partial: Path) -> None:
    with contextlib.suppress(OSError):
        partial.unlink(missing_ok=True)


async def run_export(engine: AsyncEngine, export_id: uuid.UUID, export_dir: Path, batch_rows: int) -> Finished:
    async with engine.connect() as connection:
        export = (await connection.execute(REQUEST, {"export_id": export_id})).first()
    if export is None:
        raise BusinessRuleViolation(f"export {export_id} does not exist")
    final = export_dir / f"{export_id}.csv"
    if export.status == ExportStatus.ready and final.exists():
        return Finished(export_id, export.row_count or 0, export.bytes or 0, export.duration_ms or 0, export.email,
                        already_done=True)  # fmt: skip
    await _mark(engine, MARK_RUNNING, export_id=export_id)
    started = time.perf_counter()
    query = QUERIES[export.kind]
    partial = export_dir / f".{export_id}.csv.partial"
    rows = 0
    try:
        await asyncio.to_thread(export_dir.mkdir, parents=True, exist_ok=True)
        output = await asyncio.to_thread(_CsvFile, partial)
        try:
            await asyncio.to_thread(output.write, [list(query.selected_columns.keys())])
            async with engine.connect() as connection:
                # A server-side cursor: memory stays flat whatever the number of rows.
                result = await connection.stream(
                    query.execution_options(yield_per=batch_rows),
                    {"provider_id": export.provider_id, "date_from": export.date_from, "date_to": export.date_to},
                )
                async for batch in result.partitions(batch_rows):
                    await asyncio.to_thread(output.write, [[safe_cell(cell) for cell in row] for row in batch])
                    rows += len(batch)
        finally:
            await asyncio.to_thread(output.close)
        await asyncio.to_thread(os.replace, partial, final)
    except (OperationalError, InterfaceError):
        _discard(partial)
        raise  # the database went away: transient, retried by the consumer policy
    except (OSError, DBAPIError) as error:
        _discard(partial)
        reason = f"{type(error).__name__}: {error}"[:1000]
        await _mark(engine, MARK_FAILED, export_id=export_id, error=reason)
        raise ExportFailed(reason) from error
    size = final.stat().st_size
    duration_ms = int((time.perf_counter() - started) * 1000)
    await _mark(engine, MARK_READY, export_id=export_id, row_count=rows, bytes=size, duration_ms=duration_ms,
                file_path=str(final))  # fmt: skip
    return Finished(export_id, rows, size, duration_ms, export.email)
