"""The broker stopped, killed or cut off mid-run: the gateway answers 503 instead of a 202 it could not keep,
every service reconnects by itself, and nothing is lost or charged twice."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.faults.conftest import Scenario
from tests.faults.known import ANSWERED_500, SLOW_DEAD_CONNECTION_DETECTION
from tests.faults.proxy import Mode
from tests.faults.stack import PIPELINE

BLACKHOLE_S = 60
PUBLISH_TIMEOUT_S = 5.0
"""The services' PUBLISH_TIMEOUT_S default."""


async def test_rabbitmq_stopped_and_started_mid_run(scenario: Scenario) -> None:
    workload = await scenario.workload()
    driving = scenario.drive(workload)
    await workload.accepted_at_least(workload.leads // 3)
    stopped = time.monotonic()
    await asyncio.to_thread(scenario.rabbitmq.stop)
    await asyncio.to_thread(scenario.rabbitmq.start)
    scenario.figures["broker_down_s"] = round(time.monotonic() - stopped, 1)
    await driving
    await scenario.verify(workload)


async def test_the_broker_process_killed_mid_run(scenario: Scenario) -> None:
    workload = await scenario.workload()
    driving = scenario.drive(workload)
    await workload.accepted_at_least(workload.leads // 3)
    killed = time.monotonic()
    await asyncio.to_thread(scenario.rabbitmq.kill)
    await asyncio.to_thread(scenario.rabbitmq.start)
    scenario.figures["broker_down_s"] = round(time.monotonic() - killed, 1)
    await driving
    await scenario.verify(workload)


async def seconds_until_broker_down(url: str, since: float, timeout: float) -> float:
    """How long after `since` the service's readiness reports its broker connection down (not merely slow)."""
    async with httpx.AsyncClient(timeout=5) as client, asyncio.timeout(timeout):
        while True:
            try:
                checks = (await client.get(url)).json().get("checks", {})
            except (httpx.HTTPError, ValueError):
                checks = {}
            broker = checks.get("broker", {})
            if broker.get("status") == "down" and "timed out" not in broker.get("error", ""):
                return time.monotonic() - since
            await asyncio.sleep(0.5)


async def test_the_broker_port_black_holed_for_a_minute(scenario: Scenario) -> None:
    heartbeat = scenario.rabbitmq.heartbeat_s
    workload = await scenario.workload()
    driving = scenario.drive(workload)
    await workload.accepted_at_least(workload.leads // 3)
    scenario.proxy.set(Mode.blackhole)
    dark = time.monotonic()
    dark_at_s = dark - workload.started
    try:
        detected = await asyncio.gather(*(
            seconds_until_broker_down(scenario.stack.running[role].url("/health/ready"), dark, BLACKHOLE_S)
            for role in PIPELINE
        ))  # fmt: skip
        await asyncio.sleep(max(0.0, BLACKHOLE_S - (time.monotonic() - dark)))
    finally:
        scenario.proxy.set(Mode.forward)
    healed_at_s = time.monotonic() - workload.started
    await driving
    scenario.figures["dead_connection_detected_s"] = dict(zip(PIPELINE, (round(s, 1) for s in detected), strict=True))
    during = workload.attempts_between(dark_at_s, healed_at_s)
    scenario.figures["requests_while_dark"] = len(during)
    scenario.figures["slowest_answer_while_dark_s"] = round(max(attempt.seconds for attempt in during), 1)
    found = {}
    # Dead connections are noticed within twice the heartbeat (plus the client's heartbeat tick, half a heartbeat,
    # and one readiness poll).
    late = {role: round(s, 1) for role, s in zip(PIPELINE, detected, strict=True) if s > 2.5 * heartbeat + 1.5}
    if late:
        found[SLOW_DEAD_CONNECTION_DETECTION] = str(late)
    answered_500 = sum(attempt.status == 500 for attempt in during)
    if answered_500:
        found[ANSWERED_500] = f"{answered_500} of {len(during)}"
    await scenario.verify(workload, found=found)
    # Requests answer within the publish timeout (202: the outbox keeps the event; 503 only if the database
    # could not take it), and none hangs until the client gives up (a kept-alive connection the gateway closed
    # fails at once, as a ReadError, and is retried: that is no hang).
    assert not [attempt for attempt in during if attempt.error and "Timeout" in attempt.error]
    assert {attempt.status for attempt in during if attempt.error is None} <= {202, 503}
    assert max(attempt.seconds for attempt in during) <= PUBLISH_TIMEOUT_S + 2.0
