"""SIGTERM while a message is being handled: the worker stops consuming, finishes that message, acks it and
exits; nothing is redelivered or lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.export_memory import seed as seed_export
from libs.contracts import ExportReport
from tests.e2e.conftest import wait_for
from tests.services.conftest import publisher_for

pytestmark = pytest.mark.stack
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


async def status(database_url: str, export_id: uuid.UUID) -> tuple[str, int | None]:
    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        row = (await connection.execute(
            text("SELECT status, row_count FROM report_exports WHERE id = :id"), {"id": export_id}
        )).one()  # fmt: skip
    await engine.dispose()
    return str(row.status), row.row_count


def test_sigterm_mid_export_finishes_it_and_redelivers_nothing(
    service_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    export_id = asyncio.run(seed(database_url))
    log = tmp_path / "export-worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "export_worker"],
        env={**os.environ, **service_env, "HTTP_PORT": str(PORT), "EXPORT_BATCH_ROWS": "500"},
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{PORT}/health/ready").status_code == 200, 30, "worker ready")
        asyncio.run(request(service_env["RABBITMQ_URL"], export_id))
        deadline = time.monotonic() + 30
        while asyncio.run(status(database_url, export_id))[0] != "running":
            assert time.monotonic() < deadline, "the export never started"
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=40) in (0, -signal.SIGTERM)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert asyncio.run(status(database_url, export_id)) == ("ready", ROWS)
    lines = log.read_text()
    assert lines.count('"event":"export.ready"') == 1
    assert '"event":"Application shutdown complete."' in lines
