"""A service process either starts completely or exits non-zero at once, and SIGTERM ends it within its grace
period whatever it is doing: serving, reconnecting to a broker it cannot reach, or waiting out a database outage."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from libs.contracts import SendEmail
from libs.messaging.broker import create_broker
from libs.messaging.publisher import Publisher
from libs.messaging.topology import TOPOLOGY
from libs.runtime import SERVICES
from libs.telemetry import setup_telemetry
from tests.conftest import ServiceProcess
from tests.faults.conftest import OFFSET, Proxy
from tests.faults.instances import ROOT, PrivatePostgres, PrivateRabbitMQ
from tests.faults.proxy import Mode
from tests.faults.stack import FaultStack, wait_ready

FIRST_PORT = 18606 + OFFSET
"""This module's services listen on FIRST_PORT to FIRST_PORT + 17, past the pipeline's and before the proxy's."""
START_FAILURE_S = 20.0
"""`at once`: imports and settings take a few seconds on a busy machine, a hang takes forever."""
PRE_STOP_S = 5
"""The manifests' preStop sleep, spent before SIGTERM arrives."""


def grace_period_s(service: str) -> int:
    """What Kubernetes gives the process after SIGTERM: its manifest's grace period less the preStop sleep."""
    manifest = ROOT / "deploy" / "k8s" / "base" / f"{service}.yaml"
    for document in yaml.safe_load_all(Path(manifest).read_text()):
        if document and document.get("kind") == "Deployment":
            return int(document["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]) - PRE_STOP_S
    raise AssertionError(f"no Deployment in {manifest}")


@contextlib.contextmanager
def taken(port: int) -> Iterator[None]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        yield
    finally:
        holder.close()


def exit_code_within(process: ServiceProcess, seconds: float) -> int | None:
    try:
        return process.process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.process.kill()
        process.process.wait()
        return None


@dataclass(frozen=True)
class Stop:
    seconds: float | None
    """None: the process outlived its grace period and was killed."""
    orderly: bool
    """Its shutdown hooks all ran (the log says so) and it exited 0, or by the SIGTERM uvicorn raises again
    once its graceful shutdown is over."""


def stop_with_sigterm(process: ServiceProcess, grace_s: float) -> Stop:
    logged_before = len(process.log.read_text(errors="replace"))
    started = time.monotonic()
    process.process.terminate()
    code = exit_code_within(process, grace_s)
    if code is None:
        return Stop(None, orderly=False)
    shutdown = process.log.read_text(errors="replace")[logged_before:]
    orderly = code == 0 and '"event":"Application shutdown complete."' in shutdown
    return Stop(round(time.monotonic() - started, 1), orderly)


# Workers are the sharper case: their queue-depth gauge's first refresh (a broker RPC) may be in flight when the
# bind fails, and stopping it must neither cancel that RPC nor wait on it unbounded (libs/telemetry/polling.py).
@pytest.mark.parametrize("name", [s.name for s in SERVICES])
async def test_a_service_whose_http_port_is_taken_exits_non_zero_at_once(stack: FaultStack, name: str) -> None:
    port = FIRST_PORT + [declared.name for declared in SERVICES].index(name)
    with taken(port):
        process = stack.processes.start(name, port)
        code = await asyncio.to_thread(exit_code_within, process, START_FAILURE_S)
    assert code is not None, f"{name} still ran {START_FAILURE_S:g}s after its port was found taken"
    assert code != 0


async def test_a_worker_that_cannot_reach_the_broker_at_start_exits_non_zero_at_once(stack: FaultStack) -> None:
    nothing_listens = f"amqp://nobody:nothing@127.0.0.1:{FIRST_PORT + 17}/none"
    process = stack.processes.start("email-worker", FIRST_PORT + 6, RABBITMQ_URL=nothing_listens)
    code = await asyncio.to_thread(exit_code_within, process, START_FAILURE_S)
    assert code is not None
    assert code != 0


async def test_sigterm_ends_every_service_within_its_grace_period_while_serving(stack: FaultStack) -> None:
    started = {
        declared.name: stack.processes.start(declared.name, FIRST_PORT + 7 + offset)
        for offset, declared in enumerate(SERVICES)
    }
    await asyncio.gather(*(asyncio.to_thread(wait_ready, process, 90) for process in started.values()))
    stops = await asyncio.gather(*(
        asyncio.to_thread(stop_with_sigterm, process, grace_period_s(name)) for name, process in started.items()
    ))  # fmt: skip
    stopped = dict(zip(started, stops, strict=True))
    print(f"\nSIGTERM while serving: {stopped}")
    assert all(stop.seconds is not None and stop.orderly for stop in stopped.values()), stopped


async def until_broker_down(process: ServiceProcess, timeout: float = 60) -> None:
    async with httpx.AsyncClient(timeout=5) as client, asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                broker = (await client.get(process.url("/health/ready"))).json()["checks"]["broker"]
                if broker["status"] == "down":
                    return
            await asyncio.sleep(0.3)


RECONNECTING = ("ingest-gateway", "distribution-worker", "email-worker")
FAILED_JOB_EVENTS = ('"event":"message.retry_scheduled"', '"event":"message.held"', '"event":"consumer.paused"')


@pytest.mark.parametrize("name", RECONNECTING)
async def test_sigterm_ends_a_service_within_its_grace_period_while_it_reconnects(
    stack: FaultStack, proxy: Proxy, name: str
) -> None:
    process = stack.processes.start(name, FIRST_PORT + 13 + RECONNECTING.index(name))
    await asyncio.to_thread(wait_ready, process, 90)
    proxy.set(Mode.cut)
    try:
        await until_broker_down(process)
        stop = await asyncio.to_thread(stop_with_sigterm, process, grace_period_s(name))
    finally:
        proxy.set(Mode.forward)
    print(f"\nSIGTERM while reconnecting: {name} {stop}")
    assert stop.seconds is not None, f"{name} ignored SIGTERM for its whole grace period while reconnecting"
    assert stop.orderly, process.log.read_text(errors="replace")[-3000:]


async def test_sigterm_ends_a_worker_within_its_grace_period_while_the_database_is_down(
    stack: FaultStack, postgres: PrivatePostgres, rabbitmq: PrivateRabbitMQ
) -> None:
    process = stack.processes.start("email-worker", FIRST_PORT + 16)
    await asyncio.to_thread(wait_ready, process, 90)
    telemetry = setup_telemetry("faults-lifecycle")
    broker = create_broker(rabbitmq.url(), telemetry, service="faults-lifecycle")
    await broker.connect()
    publisher = Publisher(broker, TOPOLOGY, telemetry, 5.0)
    await asyncio.to_thread(postgres.stop, "immediate")
    try:
        # Jobs that need the database (the pipeline's email-worker takes its share): this worker holds (or
        # retries) its own while the database is down.
        for index in range(20):
            await publisher.publish(
                SendEmail(template="export_ready", to=f"lifecycle-{index}@faults.example",
                          params={"export_id": "none", "row_count": 0}),
            )  # fmt: skip
        async with asyncio.timeout(30):
            while not any(event in process.log.read_text(errors="replace") for event in FAILED_JOB_EVENTS):
                await asyncio.sleep(0.2)
        stop = await asyncio.to_thread(stop_with_sigterm, process, grace_period_s("email-worker"))
    finally:
        await asyncio.to_thread(postgres.start)
        await broker.stop()
    print(f"\nSIGTERM while the database is down: {stop}")
    assert stop.seconds is not None, (
        "email-worker ignored SIGTERM for its whole grace period while the database was down"
    )
    assert stop.orderly, process.log.read_text(errors="replace")[-3000:]
