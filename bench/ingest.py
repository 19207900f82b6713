"""Ingest throughput: POST /api/v1/leads on the ingest-gateway at 64 connections (wrk, a new lead per request),
against a constant Litestar route on the same server settings in the same run: the same number of server processes
(`--workers`, the gateway's HTTP_WORKERS; one by default, the figure issue 12 set its target on).

Alone, on this checkout: python -m bench.ingest [--runs 1] [--duration 20] [--connections 64] [--port 18501]
[--workers N]

Each run has its own RabbitMQ vhost (made through the management API, deleted with everything in it at the end),
and the gateway is stopped only once its relay has published every lead.submitted the run staged: nothing of a run
is left for a later gateway or test to publish or consume.

`--storage`: the ceiling under it, the lead's storage alone (no HTTP, no publishing), in this process on this
checkout: `--connections` submitters for `--duration` seconds through the gateway's group commit, against the same
submitters storing one statement per lead (at most the pool's 10 at once, as the gateway did before group commit).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.broker import channel, declare_topology
from bench.harness import (
    ROOT,
    BenchEnv,
    BenchError,
    load_average,
    reset_tables,
    running,
    start_process,
    start_service,
    wait_until,
)
from bench.machine_cpu import Groups, cpu_details, database_name, since, snapshot
from bench.report import Measurement
from bench.runner import run_alone
from bench.wrk import run_wrk
from ingest_gateway import submissions
from ingest_gateway.accounts import AuthenticatedSource, create_lead_source
from ingest_gateway.submissions import MAX_BATCH, GroupCommit, LeadSubmission

SCRIPT = Path(__file__).with_name("ingest.lua")
TARGET = 0.35
"""Issue 12's ratio to the constant route: the machine CPU account says whether the cores allow it."""
# The outbox too: events a run's relay had not published yet would be published by the next gateway started on
# this database (another run's, or a test's), into a topology that no longer holds their leads.
TRUNCATE = "TRUNCATE leads, lead_sources, outbox CASCADE"
NEW_SOURCE = text("INSERT INTO lead_sources (name, api_key_hash) VALUES (:name, :hash) RETURNING id")
STORED = text("SELECT count(*) FROM leads WHERE source_id = :source")
# The run's lead.submitted rows still staged (an outbox row names its lead in its message id, lead.submitted:<id>).
# Each staged row's lead looked up by its primary key, in a subquery PostgreSQL cannot flatten into a join: as an
# IN, right after the run's TRUNCATE (statistics of empty tables) it chose a nested loop reading every lead of the
# source for every staged row, and a relay lagging 100,000 rows behind kept the count running for minutes.
_RUNS_STAGED = (
    "FROM outbox WHERE message_type = 'lead.submitted' AND "
    "(SELECT source_id FROM leads WHERE id = CAST(substr(outbox.message_id, 16) AS uuid)) = :source"
)
STAGED = text(f"SELECT count(*) {_RUNS_STAGED}")
UNSTAGED = text(f"DELETE {_RUNS_STAGED}")
DRAIN_S = 60
"""How long the relay gets to publish what the run staged once the load stops."""


@asynccontextmanager
async def own_vhost(env: BenchEnv, run: str) -> AsyncIterator[BenchEnv]:
    """`env` on a vhost of the run's own (`<env's vhost>-bench-ingest-<run>`, the broker user given every
    permission on it), made and deleted with everything in it through the management API: a run's events never
    reach the test suite's or another run's queues."""
    broker, management = urlsplit(env.rabbitmq_url), urlsplit(env.settings["RABBITMQ_MANAGEMENT_URL"])
    vhost = quote(f"{unquote(broker.path.lstrip('/')) or 'default'}-bench-ingest-{run}", safe="")
    user = quote(unquote(broker.username or "guest"), safe="")
    async with httpx.AsyncClient(
        base_url=f"{management.scheme}://{management.hostname}:{management.port or 15672}",
        auth=(unquote(management.username or "guest"), unquote(management.password or "guest")),
        timeout=30,
    ) as api:
        (await api.put(f"/api/vhosts/{vhost}")).raise_for_status()
        try:
            permissions = {"configure": ".*", "write": ".*", "read": ".*"}
            (await api.put(f"/api/permissions/{vhost}/{user}", json=permissions)).raise_for_status()
            url = broker._replace(path=f"/{vhost}").geturl()
            yield replace(env, rabbitmq_url=url, settings={**env.settings, "RABBITMQ_URL": url})
        finally:
            (await api.delete(f"/api/vhosts/{vhost}")).raise_for_status()


async def staged_count(engine: AsyncEngine, source: object) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(STAGED, {"source": source}) or 0)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def api_key_hash(api_key: str) -> str:
    """As the gateway stores a lead source's key (ingest_gateway/accounts.py): SHA-256, hex."""
    return hashlib.sha256(api_key.encode()).hexdigest()


@dataclass(frozen=True)
class Ingest:
    duration_s: int = 20
    connections: int = 64
    warmup_s: int = 3
    workers: int = 1
    """The gateway's HTTP_WORKERS, and the baseline's processes (the same server settings). Each process is one
    event loop on at most one core: with one, both sides are bound by their process's CPU per request whatever
    the other core does; with one per core (the gateway's own default), by the machine's."""
    port: int = 18501
    baseline_port: int = 18502
    name = "ingest"
    unit = "req/s"
    baseline_label = "constant Litestar route, same server settings"

    @property
    def figure(self) -> str:
        return f"ingest `POST /api/v1/leads`, {self.connections} connections"

    async def wrk(self, url: str, api_key: str, run: str, seconds: int) -> WrkResult:
        """Every response must be a 2xx: a figure made of errors is refused."""
        result = await run_wrk(
            [f"-t{min(2, self.connections)}", f"-c{self.connections}", f"-d{seconds}s", "--timeout", "10s",
             "-s", str(SCRIPT), url],
            {"BENCH_API_KEY": api_key, "BENCH_RUN": run}, f"{url} (run {run})",
        )  # fmt: skip
        return WrkResult(
            requests=result["requests"],
            seconds=result["duration_us"] / 1e6,
            p50_ms=result["p50_us"] / 1000,
            p99_ms=result["p99_us"] / 1000,
        )

    async def measure(self, checkout: Path, env: BenchEnv) -> Measurement:
        load = load_average()
        run = uuid.uuid4().hex[:8]
        api_key = "fmhl_bench_" + secrets.token_urlsafe(24)
        engine = env.engine()
        source = None
        try:
            if env.fresh_tables:
                await reset_tables(engine, TRUNCATE)
            async with engine.begin() as connection:
                source = await connection.scalar(NEW_SOURCE, {"name": f"bench-{run}", "hash": api_key_hash(api_key)})
            async with own_vhost(env, run) as run_env:
                async with channel(run_env.rabbitmq_url) as chan:
                    await declare_topology(chan)
                workers = {"HTTP_WORKERS": str(self.workers)}
                gateway_process = start_service(checkout, "ingest-gateway", run_env, self.port, extra=workers)
                async with running(gateway_process) as gateway:
                    url = gateway.url("/api/v1/leads")
                    await self.wrk(url, api_key, f"{run}-warmup", self.warmup_s)
                    groups = Groups(database_name(env.database_url), {"ingest-gateway": [gateway.process.pid]})
                    cpu_before, machine = gateway.cpu_seconds(), snapshot(groups)
                    measured = await self.wrk(url, api_key, run, self.duration_s)
                    cpu_spent, machine_use = gateway.cpu_seconds() - cpu_before, since(machine, groups)
                    cpu_per_request_ms = cpu_spent * 1000 / measured.requests

                    async def relayed() -> bool:
                        return await staged_count(engine, source) == 0

                    await wait_until(relayed, DRAIN_S, "the relay to publish the run's lead.submitted", service=gateway)
            async with engine.connect() as connection:
                stored = int(await connection.scalar(STORED, {"source": source}) or 0)
            if stored < measured.requests:
                raise BenchError(f"{measured.requests} leads accepted but {stored} stored")
            constant_route = start_process(
                "constant-route",
                [sys.executable, "-m", "bench.constant_app", str(self.baseline_port), str(self.workers)],
                cwd=ROOT,
                environ=env.service_environ(ROOT, self.baseline_port),
                port=self.baseline_port,
                log=env.log_dir / f"constant-route-{self.baseline_port}.log",
            )
            async with running(constant_route) as constant:
                url = constant.url("/api/v1/leads")
                await self.wrk(url, api_key, f"{run}-baseline-warmup", self.warmup_s)
                groups = Groups(database_name(env.database_url), {"constant-route": [constant.process.pid]})
                machine = snapshot(groups)
                baseline = await self.wrk(url, api_key, f"{run}-baseline", self.duration_s)
                baseline_use = since(machine, groups)
        finally:
            if env.fresh_tables:
                await reset_tables(engine, TRUNCATE)
            elif source is not None:  # a run that failed midway: no later gateway on this database publishes them
                async with engine.begin() as connection:
                    await connection.execute(UNSTAGED, {"source": source})
            await engine.dispose()
        return Measurement(
            value=measured.rate,
            baseline=baseline.rate,
            count=measured.requests,
            load=load,
            details={
                "p50_ms": measured.p50_ms,
                "p99_ms": measured.p99_ms,
                "baseline_p99_ms": baseline.p99_ms,
                "cpu_per_item_ms": cpu_per_request_ms,
                # The same to the microsecond: the runner prints details to one decimal.
                "cpu_per_item_us": cpu_per_request_ms * 1000,
                # What the gateway's processes allow at this CPU per request, each a whole core to itself: its
                # event loops are where requests wait once this is the measured rate.
                "rate_gateway_processes_allow": self.workers * 1000 / cpu_per_request_ms,
                **cpu_details(machine_use, measured.requests, target_rate=TARGET * baseline.rate),
                **cpu_details(baseline_use, baseline.requests, "baseline_"),
            },
        )


CONTACT = {"name": "Bench Lead", "email": "lead@example.com", "phone": "+1 415 555 0100"}
POOL_SIZE = 10


@dataclass(frozen=True)
class Storage:
    duration_s: int = 10
    connections: int = 64
    name = "ingest_storage"
    unit = "leads/s"
    baseline_label = "one statement per lead, at most 10 at once"

    @property
    def figure(self) -> str:
        return f"lead storage alone (group commit), {self.connections} submitters in one process"

    async def submitted(self, store: Callable[[LeadSubmission], Awaitable[object]]) -> tuple[float, float]:
        """Leads stored per second and the client's CPU ms per lead, `connections` submitters for `duration_s`."""
        stored = 0
        deadline = time.monotonic() + self.duration_s

        async def submitter() -> None:
            nonlocal stored
            while time.monotonic() < deadline:
                await store(LeadSubmission.model_validate({"external_id": uuid.uuid4().hex, "category": "roofing",
                                                           "zip": "94107", "contact": CONTACT}))  # fmt: skip
                stored += 1

        cpu, started = time.process_time(), time.monotonic()
        await asyncio.gather(*(submitter() for _ in range(self.connections)))
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
        return stored / elapsed, cpu * 1000 / max(stored, 1)

    async def measure(self, checkout: Path, env: BenchEnv) -> Measurement:
        """In this process, on this checkout's code (`checkout` is not used)."""
        load = load_average()
        engine = create_async_engine(env.database_url, pool_size=POOL_SIZE, max_overflow=0)
        try:
            source_id, _ = await create_lead_source(engine, f"bench-storage-{uuid.uuid4().hex[:8]}", trusted=False)
            source = AuthenticatedSource(id=source_id, name="bench-storage", trusted=False)
            commits = GroupCommit(engine, max_batch=MAX_BATCH, wait_s=30)
            at_once = asyncio.Semaphore(POOL_SIZE)

            async def grouped(lead: LeadSubmission) -> object:
                return await commits.submit(submissions.values(source, lead, None))

            async def alone(lead: LeadSubmission) -> object:
                async with at_once:
                    return await submissions.submit(engine, source, lead, None)

            alone_rate, alone_cpu_ms = await self.submitted(alone)
            grouped_rate, grouped_cpu_ms = await self.submitted(grouped)
        finally:
            if env.fresh_tables:
                await reset_tables(engine, TRUNCATE)
            await engine.dispose()
        return Measurement(
            value=grouped_rate,
            baseline=alone_rate,
            count=int(grouped_rate * self.duration_s),
            load=load,
            details={"cpu_per_item_ms": grouped_cpu_ms, "baseline_cpu_per_item_ms": alone_cpu_ms},
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--duration", type=int, default=Ingest.duration_s, help="seconds measured")
    parser.add_argument("--connections", type=int, default=Ingest.connections)
    parser.add_argument("--port", type=int, default=Ingest.port, help="the gateway's; the baseline's is the next one")
    parser.add_argument(
        "--workers", type=int, default=Ingest.workers, help="the gateway's HTTP_WORKERS and the baseline's"
    )
    parser.add_argument("--storage", action="store_true", help="the lead's storage alone: group commit vs per lead")
    arguments, rest = parser.parse_known_args()
    if arguments.storage:
        run_alone(Storage(duration_s=arguments.duration, connections=arguments.connections), rest)
        return
    benchmark = Ingest(
        duration_s=arguments.duration,
        connections=arguments.connections,
        workers=arguments.workers,
        port=arguments.port,
        baseline_port=arguments.port + 1,
    )
    run_alone(benchmark, rest)


if __name__ == "__main__":
    main()
