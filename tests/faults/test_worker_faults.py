"""Worker processes killed or frozen at the worst moments: nothing lost, nothing charged twice, mail sent once
(except the one window the SMTP protocol leaves: a crash between the server's acceptance and our record)."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import time
import uuid

import httpx
from sqlalchemy import select
from sqlmodel import col

from bench.export_memory import seed as seed_export_rows
from ingest_gateway.accounts import create_user
from libs.auth import TotpSecrets
from libs.db.tables import EmailLog, EmailStatus, ExportStatus, ReportExport
from tests.conftest import TEST_TOTP_ENCRYPTION_KEY
from tests.faults.conftest import Scenario
from tests.faults.mail import Accepted

EXPORT_ROWS = 100_000
PASSWORD = "correct horse battery staple"


async def consumers_of(scenario: Scenario, queue: str) -> int:
    rabbitmq = scenario.rabbitmq
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.get(f"{rabbitmq.management_url}/api/queues/{rabbitmq.vhost}/{queue}")
    return int(response.json().get("consumers", 0))


async def test_the_workload_alone_keeps_every_promise(scenario: Scenario) -> None:
    workload = await scenario.workload()
    await workload.run_all()
    await scenario.verify(workload)


async def test_distribution_worker_killed_at_three_points_of_the_run(scenario: Scenario) -> None:
    workload = await scenario.workload()
    driving = scenario.drive(workload)
    for quarter in (1, 2, 3):
        await workload.accepted_at_least(workload.leads * quarter // 4)
        await asyncio.to_thread(scenario.stack.kill, "distribution-worker")
        await asyncio.to_thread(scenario.stack.up, "distribution-worker")
    await driving
    await scenario.verify(workload)


async def test_a_worker_frozen_past_the_heartbeat_leaves_its_work_to_the_other_replica(scenario: Scenario) -> None:
    await asyncio.to_thread(scenario.stack.up, "distribution-worker-2")
    workload = await scenario.workload()
    driving = scenario.drive(workload)
    await workload.accepted_at_least(workload.leads // 3)
    async with asyncio.timeout(60):
        while await consumers_of(scenario, "distribution") != 2:
            await asyncio.sleep(0.5)
    scenario.stack.freeze("distribution-worker")
    frozen = time.monotonic()
    try:
        # The broker closes a connection whose heartbeats stopped: the frozen replica's consumer disappears and
        # its unacked deliveries go to the other replica.
        async with asyncio.timeout(60):
            while await consumers_of(scenario, "distribution") != 1:
                await asyncio.sleep(0.5)
        scenario.figures["broker_dropped_frozen_after_s"] = round(time.monotonic() - frozen, 1)
    finally:
        scenario.stack.thaw("distribution-worker")
    await driving
    await scenario.verify(workload)
    assert scenario.figures["broker_dropped_frozen_after_s"] <= 6 * scenario.rabbitmq.heartbeat_s  # type: ignore[operator]


async def test_email_worker_killed_between_smtp_acceptance_and_its_record(scenario: Scenario) -> None:
    workload = await scenario.workload()
    worker = scenario.stack.running["email-worker"]
    killed: list[Accepted] = []

    def kill_the_sender(accepted: Accepted) -> None:
        # Runs in the SMTP server before the sender hears 250: the mail is accepted, the sender's record is not.
        if not killed and accepted.to in workload.run.emails:
            killed.append(accepted)
            os.kill(worker.process.pid, signal.SIGKILL)

    driving = scenario.drive(workload)
    await workload.accepted_at_least(workload.leads // 3)
    scenario.mail.on_accept = kill_the_sender
    async with asyncio.timeout(120):
        while not killed:
            await asyncio.sleep(0.05)
    await asyncio.to_thread(worker.process.wait, 10)
    scenario.mail.on_accept = None
    # The window: mails the server accepted that the dead sender had not recorded (the one it was sending when
    # killed, and any other it had in flight at that moment).
    async with scenario.engine.connect() as connection:
        recorded = set(
            await connection.scalars(select(col(EmailLog.job_id)).where(col(EmailLog.status) == EmailStatus.sent))
        )
    window = frozenset(mail.job for mail in list(scenario.mail.accepted) if mail.job not in recorded)
    await asyncio.to_thread(scenario.stack.up, "email-worker")
    await driving
    scenario.figures["sent_but_unrecorded_at_the_kill"] = len(window)
    findings = await scenario.verify(workload, duplicates_allowed=window)
    assert killed[0].job in window
    assert findings.figures["duplicate_mails"] <= len(window)


async def export_status(scenario: Scenario, export_id: uuid.UUID) -> ExportStatus:
    async with scenario.engine.connect() as connection:
        status = await connection.scalar(select(col(ReportExport.status)).where(col(ReportExport.id) == export_id))
    assert isinstance(status, ExportStatus)
    return status


async def test_export_worker_killed_mid_export_never_serves_a_partial_file(scenario: Scenario) -> None:
    label = f"faults-export-{uuid.uuid4().hex[:8]}"
    await seed_export_rows(scenario.engine, label, EXPORT_ROWS)
    async with scenario.engine.connect() as connection:
        provider_id = await connection.scalar(select(col(ReportExport.provider_id)).order_by(
            col(ReportExport.created_at).desc()).limit(1))  # fmt: skip
    email = f"{label}@faults.example"
    totp = TotpSecrets.from_keys(TEST_TOTP_ENCRYPTION_KEY)
    await create_user(scenario.engine, email, "provider", PASSWORD, provider_id, False, totp=totp)
    gateway = scenario.stack.running["ingest-gateway"].url("")
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        token = (await client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})).json()
        auth = {"Authorization": f"Bearer {token['access_token']}"}
        today = datetime.date.today().isoformat()
        requested = await client.post(
            "/api/v1/reports/exports", json={"kind": "assignments", "date_from": today, "date_to": today}, headers=auth
        )
        assert requested.status_code == 202, requested.text
        export_id = uuid.UUID(requested.json()["id"])
        downloads: list[tuple[int, int]] = []

        async def download_all_along() -> None:
            """Whatever the export's state, a download is refused or complete: (status, CSV lines) each time."""
            while True:
                response = await client.get(f"/api/v1/reports/exports/{export_id}/download", headers=auth)
                downloads.append(
                    (response.status_code, response.text.count("\n") if response.status_code == 200 else 0)
                )
                await asyncio.sleep(0.1)

        workload = await scenario.workload()
        driving = scenario.drive(workload)
        downloading = asyncio.create_task(download_all_along())
        async with asyncio.timeout(120):
            while await export_status(scenario, export_id) != ExportStatus.running:
                await asyncio.sleep(0.05)
        await asyncio.to_thread(scenario.stack.kill, "export-worker")
        assert await export_status(scenario, export_id) == ExportStatus.running
        await asyncio.to_thread(scenario.stack.up, "export-worker")
        async with asyncio.timeout(300):
            while not downloads or downloads[-1][0] != 200:
                await asyncio.sleep(0.2)
        downloading.cancel()
    await driving
    await scenario.verify(workload)
    served = [lines for status, lines in downloads if status == 200]
    assert served
    assert set(served) == {EXPORT_ROWS + 1}, "a download served a partial file"
    assert {status for status, _ in downloads} <= {200, 409}
    scenario.figures["downloads_tried"] = len(downloads)
