"""The gateway's answer is about the lead's durability, not the broker's mood: while the broker blocks publishers
(a memory alarm) or cannot be reached (a black-holed port), a client that never retries gets 202 for every lead,
and every one of them ends distributed or unassigned once the broker is back; only a database that cannot store
the lead gets 503 with Retry-After, never 500, and the first request after its restart is served."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import httpx
from sqlalchemy import func, select

from libs.db.tables import OutboxMessage
from tests.faults.conftest import Scenario
from tests.faults.known import WORKER_STUCK_UNREADY
from tests.faults.proxy import Mode
from tests.faults.stack import PIPELINE, wait_ready
from tests.faults.workload import ZIP_CODES, Attempt, Submission, Workload

FAULT_S = 30
"""How long each broker fault lasts: past the heartbeat's detection (3 x 5 s here), so connections are lost."""
LEADS = 200
RATE_PER_S = 10.0


def body(workload: Workload, external_id: str, index: int) -> dict[str, object]:
    return {"external_id": external_id, "category": workload.run.category, "zip": ZIP_CODES[index % len(ZIP_CODES)],
            "contact": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+1 415 5550100"}}  # fmt: skip


async def submit_once(workload: Workload, client: httpx.AsyncClient, index: int) -> Submission:
    """One request, whatever it answers: recorded as the checker reads a submission (accepted on 202 only)."""
    submission = Submission(f"{workload.run.name}-{index}")
    workload.submissions.append(submission)
    began = time.monotonic()
    try:
        response = await client.post(
            "/api/v1/leads",
            json=body(workload, submission.external_id, index),
            headers={"X-API-Key": workload.run.api_key},
        )
    except httpx.TransportError as error:
        submission.attempts.append(
            Attempt(began - workload.started, time.monotonic() - began, None, type(error).__name__)
        )
        return submission
    submission.attempts.append(Attempt(began - workload.started, time.monotonic() - began, response.status_code, None))
    if response.status_code == 202:
        submission.lead_id = uuid.UUID(response.json()["lead_id"])
    elif response.status_code < 500:
        submission.refused = f"{response.status_code} {response.text[:200]}"
    return submission


async def never_retrying(workload: Workload) -> None:
    """The workload's leads at its rate, each sent once: a client that takes any answer as final."""
    workload.started = time.monotonic()
    async with httpx.AsyncClient(base_url=workload.gateway, timeout=workload.request_timeout_s) as client:
        tasks = []
        for index in range(workload.leads):
            tasks.append(asyncio.create_task(submit_once(workload, client, index)))
            await asyncio.sleep(max(0.0, workload.started + (index + 1) / workload.rate_per_s - time.monotonic()))
        await asyncio.gather(*tasks)
    workload.finished.set()


async def stuck_unready(scenario: Scenario, timeout_s: float = 60.0) -> dict[str, str]:
    """Every pipeline service ready again once the fault healed; one that is not within `timeout_s` is a finding
    (restarted, so the gateway's leads can still be checked)."""
    stuck = []
    for role in PIPELINE:
        try:
            await asyncio.to_thread(wait_ready, scenario.stack.running[role], timeout_s)
        except AssertionError:
            stuck.append(role)
            await asyncio.to_thread(scenario.stack.down, role)
            await asyncio.to_thread(scenario.stack.up, role)
    return {WORKER_STUCK_UNREADY: ", ".join(stuck)} if stuck else {}


async def outbox_rows(scenario: Scenario) -> int:
    async with scenario.engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


async def through_a_broker_fault(
    scenario: Scenario, start: Callable[[], object], heal: Callable[[], object]
) -> tuple[Workload, int]:
    """Runs the workload, with the fault (`start`, then `heal` FAULT_S later) from a third of it; answers the
    workload and how many events the outbox held when the fault healed."""
    workload = await scenario.workload(LEADS, RATE_PER_S)
    driving = asyncio.create_task(never_retrying(workload))
    await workload.accepted_at_least(LEADS // 3)
    began_s = time.monotonic() - workload.started
    await asyncio.to_thread(start)
    try:
        await asyncio.sleep(FAULT_S)
        held = await outbox_rows(scenario)
    finally:
        await asyncio.to_thread(heal)
    healed_s = time.monotonic() - workload.started
    await driving
    during = workload.attempts_between(began_s, healed_s)
    scenario.figures.update(outbox_rows_at_heal=held, requests_during_fault=len(during))
    scenario.figures["slowest_answer_during_fault_s"] = round(max(attempt.seconds for attempt in during), 2)
    # The database was there throughout: every lead is accepted, whatever the broker does.
    assert {attempt.status for attempt in during} == {202}
    return workload, held


async def test_leads_accepted_during_a_memory_alarm_are_all_distributed_once_it_clears(scenario: Scenario) -> None:
    node = scenario.rabbitmq
    workload, held = await through_a_broker_fault(
        scenario,
        # A watermark below what the node uses raises the memory alarm: every publishing connection is blocked.
        lambda: node.ctl("set_vm_memory_high_watermark", "absolute", "1MB"),
        lambda: node.ctl("set_vm_memory_high_watermark", "0.4"),
    )
    assert held > 0  # the fault did hold events back
    await scenario.verify(workload, found=await stuck_unready(scenario))
    assert await outbox_rows(scenario) == 0


async def test_leads_accepted_while_the_broker_is_black_holed_are_all_distributed_once_it_is_back(
    scenario: Scenario,
) -> None:
    workload, held = await through_a_broker_fault(
        scenario, lambda: scenario.proxy.set(Mode.blackhole), lambda: scenario.proxy.set(Mode.forward)
    )
    assert held > 0
    await scenario.verify(workload, found=await stuck_unready(scenario))
    assert await outbox_rows(scenario) == 0


async def test_a_database_outage_is_503_with_retry_after_and_the_first_request_after_it_is_served(
    scenario: Scenario,
) -> None:
    workload = await scenario.workload(leads=0)
    workload.leads = 2
    async with httpx.AsyncClient(base_url=workload.gateway, timeout=workload.request_timeout_s) as client:
        # The key is remembered by the gateway before the outage, as a busy source's would be.
        await submit_once(workload, client, 0)
        await asyncio.to_thread(scenario.postgres.stop, "immediate")
        try:
            refused = await client.post(
                "/api/v1/leads", json=body(workload, "during-outage", 9), headers={"X-API-Key": workload.run.api_key}
            )
        finally:
            await asyncio.to_thread(scenario.postgres.start)
        after = await submit_once(workload, client, 1)
    workload.finished.set()
    assert (refused.status_code, refused.headers.get("retry-after")) == (503, "5")
    assert after.attempts[0].status == 202
    await scenario.verify(workload)
