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

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from export_worker.csv_safety import safe_cell
from libs.messaging.errors import BusinessRuleViolation

QUERIES = {
    "assignments": (
        ["assignment_id", "assigned_at", "lead_id", "category", "zip", "provider_id", "provider", "price_cents",
         "status"],
        "SELECT a.id, a.created_at, a.lead_id, l.category, l.zip, a.provider_id, p.name, a.price_cents, a.status "
        "FROM assignments a JOIN leads l ON l.id = a.lead_id JOIN providers p ON p.id = a.provider_id "
        "WHERE a.created_at >= CAST(:date_from AS date) AND a.created_at < CAST(:date_to AS date) + 1 "
        "AND (CAST(:provider AS uuid) IS NULL OR a.provider_id = :provider) ORDER BY a.created_at, a.id",
    ),
    "ledger_statement": (
        ["entry_id", "at", "kind", "amount_cents", "assignment_id", "refund_id", "running_total_cents"],
        "SELECT id, created_at, kind, amount_cents, assignment_id, refund_id, "
        "SUM(amount_cents) OVER (ORDER BY created_at, id) FROM ledger_entries "
        "WHERE provider_id = :provider "
        "AND created_at >= CAST(:date_from AS date) AND created_at < CAST(:date_to AS date) + 1 "
        "ORDER BY created_at, id",
    ),
}  # fmt: skip


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


async def _mark(engine: AsyncEngine, export_id: uuid.UUID, status: str, **values: Any) -> None:
    values["status"] = status
    assignments = ", ".join(f"{key} = :{key}" for key in values)
    if status in ("ready", "failed"):
        assignments += ", finished_at = now()"
    async with engine.begin() as connection:
        await connection.execute(
            text(f"UPDATE report_exports SET {assignments} WHERE id = :id"),  # noqa: S608 - keys are ours
            {"id": export_id, **values},
        )


def _discard(partial: Path) -> None:
    with contextlib.suppress(OSError):
        partial.unlink(missing_ok=True)


async def run_export(engine: AsyncEngine, export_id: uuid.UUID, export_dir: Path, batch_rows: int) -> Finished:
    async with engine.connect() as connection:
        export = (
            await connection.execute(
                text(
                    "SELECT e.kind, e.status, e.provider_id, e.date_from, e.date_to, e.row_count, e.bytes, "
                    "e.duration_ms, u.email FROM report_exports e LEFT JOIN users u ON u.id = e.requested_by "
                    "WHERE e.id = :id"
                ),
                {"id": export_id},
            )
        ).first()
    if export is None:
        raise BusinessRuleViolation(f"export {export_id} does not exist")
    final = export_dir / f"{export_id}.csv"
    if export.status == "ready" and final.exists():
        return Finished(export_id, export.row_count, export.bytes, export.duration_ms, export.email, already_done=True)
    await _mark(engine, export_id, "running", error=None)
    started = time.perf_counter()
    header, query = QUERIES[export.kind]
    partial = export_dir / f".{export_id}.csv.partial"
    rows = 0
    try:
        await asyncio.to_thread(export_dir.mkdir, parents=True, exist_ok=True)
        output = await asyncio.to_thread(_CsvFile, partial)
        try:
            await asyncio.to_thread(output.write, [header])
            async with engine.connect() as connection:
                result = await connection.stream(
                    text(query).execution_options(yield_per=batch_rows),
                    {"provider": export.provider_id, "date_from": export.date_from, "date_to": export.date_to},
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
        await _mark(engine, export_id, "failed", error=reason)
        raise ExportFailed(reason) from error
    size = final.stat().st_size
    duration_ms = int((time.perf_counter() - started) * 1000)
    await _mark(
        engine, export_id, status="ready", row_count=rows, bytes=size, duration_ms=duration_ms, file_path=str(final)
    )
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE report_exports SET finished_at = now() WHERE id = :id"), {"id": export_id}
        )
    return Finished(export_id, rows, size, duration_ms, export.email)
