"""SIGTERM while a message is being handled: the worker stops consuming, finishes that message, acks it and
exits; nothing is redelivered or lost."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import col

from bench.export_memory import seed as seed_export
from libs.contracts import ExportReport
from libs.db.tables import ExportStatus, ReportExport
from tests.conftest import ServiceProcesses, wait_for
from tests.services.conftest import publisher_for

ROWS = 150_000
PORT = 18_110


async def seed(database_url: str) -> uuid.UUID:
    """A provider with ROWS assignments today and an export request for them (the benchmark's own seeding)."""
    engine = create_async_engine(database_url)
    export_id = await seed_export(engine, f"drain-{uuid.uuid4().hex[:8]}", ROWS)
    await engine.dispose()
    return uuid.UUID(export_id)


async def request(rabbitmq_url: str, export_id: uuid.UUID) -> None:
    publisher, broker = await publisher_for(rabbitmq_url)
    await publisher.publish(ExportReport(export_id=export_id), message_id=f"drain:{export_id}")
    await broker.stop()


async def status(database_url: str, export_id: uuid.UUID) -> tuple[ExportStatus, int | None]:
    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        statement = select(col(ReportExport.status), col(ReportExport.row_count)).where(
            col(ReportExport.id) == export_id
        )
        row = (await connection.execute(statement)).one()
    await engine.dispose()
    return row.status, row.row_count


def test_sigterm_mid_export_finishes_it_and_redelivers_nothing(
    service_processes: ServiceProcesses, database_url: str
) -> None:
    export_id = asyncio.run(seed(database_url))
    worker = service_processes.start("export-worker", PORT, EXPORT_BATCH_ROWS="500")
    worker.wait_ready(30)
    asyncio.run(request(service_processes.env["RABBITMQ_URL"], export_id))
    wait_for(lambda: asyncio.run(status(database_url, export_id))[0] == ExportStatus.running, 30, "the export running")

    assert worker.stop(timeout=40) == 0
    assert asyncio.run(status(database_url, export_id)) == (ExportStatus.ready, ROWS)
    lines = worker.log.read_text()
    assert lines.count('"event":"export.ready"') == 1
    assert '"event":"Application shutdown complete."' in lines
