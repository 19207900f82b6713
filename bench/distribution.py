"""Distribution throughput: approved leads distributed per second by one distribution-worker process, from a
queue already holding one `lead.approved` per lead (3 providers each taking every lead), against a bare
consume+ack of the same messages from a quorum queue in the same run.

Alone, on this checkout: python -m bench.distribution [--runs 1] [--leads 2000]
"""

from __future__ import annotations

import argparse
import uuid
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.broker import channel, consume_and_ack, declare_topology, depth, publish_all, purge_topology
from bench.harness import (
    BenchEnv,
    BenchError,
    load_average,
    reset_tables,
    running,
    start_service,
    time_drain,
    wait_until,
)
from bench.machine_cpu import Groups, cpu_details, database_name
from bench.report import Measurement
from bench.runner import run_alone
from libs.contracts import LeadApproved
from libs.messaging.headers import CORRELATION_ID
from libs.messaging.topology import DISTRIBUTION, EVENTS_EXCHANGE

PREFETCH = 10
"""The workers' default prefetch (WorkerSettings): the raw consumer gets the same."""
TARGET = 0.3
"""Issue 12's ratio for three providers each taking every lead: the machine CPU account says whether the cores allow
it."""
MAX_PROVIDERS_PER_LEAD = 3
"""The worker's default (its MAX_PROVIDERS_PER_LEAD), which the benchmark leaves as it is."""
PRICE_CENTS = 100
ZIP = "94107"
CONTACT = orjson.dumps({"name": "Bench Lead", "email": "lead@example.com", "phone": "+1 415 555 0100"}).decode()

TRUNCATE = (
    "TRUNCATE leads, lead_sources, assignments, ledger_entries, subscriptions, providers, processed_messages CASCADE"
)
NEW_SOURCE = text("INSERT INTO lead_sources (name, api_key_hash) VALUES (:name, :hash) RETURNING id")
NEW_PROVIDER = text("INSERT INTO providers (name, email, balance_cents) VALUES (:name, :email, :balance) RETURNING id")
TOP_UP = text("INSERT INTO ledger_entries (provider_id, kind, amount_cents) VALUES (:provider, 'top_up', :amount)")
NEW_SUBSCRIPTION = text(
    "INSERT INTO subscriptions (provider_id, category, zip_codes, price_cents) "
    "VALUES (:provider, :category, CAST(:zips AS text[]), :price)"
)
NEW_LEADS = text(
    "INSERT INTO leads (source_id, external_id, category, zip, contact, status, decided_at) "
    "SELECT :source, CAST(:run AS text) || '-' || g, :category, :zip, CAST(:contact AS jsonb), 'approved', now() "
    "FROM generate_series(1, :count) g RETURNING id"
)
DISTRIBUTED = text("SELECT count(*) FROM leads WHERE source_id = :source AND status = 'distributed'")
ASSIGNED = text("SELECT count(*) FROM assignments a JOIN leads l ON l.id = a.lead_id WHERE l.source_id = :source")


async def seed(engine: AsyncEngine, run: str, leads: int, providers: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """`providers` providers subscribed to the run's own category with a balance for every lead twice over,
    and `leads` leads approved in it. Returns the lead source and the leads."""
    balance = leads * PRICE_CENTS * 2
    async with engine.begin() as connection:
        source = await connection.scalar(NEW_SOURCE, {"name": f"bench-{run}", "hash": f"bench-{run}"})
        for number in range(providers):
            provider = await connection.scalar(
                NEW_PROVIDER, {"name": f"bench-{run}-{number}", "email": f"p{number}-{run}@example.com",
                               "balance": balance},
            )  # fmt: skip
            await connection.execute(TOP_UP, {"provider": provider, "amount": balance})
            await connection.execute(
                NEW_SUBSCRIPTION,
                {"provider": provider, "category": f"bench-{run}", "zips": [ZIP], "price": PRICE_CENTS},
            )
        rows = await connection.execute(
            NEW_LEADS,
            {"source": source, "run": run, "category": f"bench-{run}", "zip": ZIP, "contact": CONTACT, "count": leads},
        )
        lead_ids = [row.id for row in rows]
    return source, lead_ids


def lead_approved(lead_id: uuid.UUID, approved_by: str) -> aio_pika.Message:
    """As the gateway publishes an approval (libs/messaging/publisher.py): persistent, typed, with its
    message id and the correlation id in our header."""
    message_id = f"lead.approved:{lead_id}"
    return aio_pika.Message(
        LeadApproved(lead_id=lead_id, approved_by=approved_by).model_dump_json().encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=message_id,
        type=LeadApproved.message_type,
        app_id="ingest-gateway",
        headers={CORRELATION_ID: message_id},
    )


@dataclass(frozen=True)
class Distribution:
    leads: int = 2000
    providers: int = 3
    port: int = 18511
    name = "distribution"
    unit = "leads/s"
    baseline_label = "consume+ack of a quorum queue"

    @property
    def figure(self) -> str:
        return f"distribution, {self.providers} providers each taking every lead"

    async def measure(self, checkout: Path, env: BenchEnv) -> Measurement:
        load = load_average()
        run = uuid.uuid4().hex[:8]
        approved_by = str(uuid.uuid4())
        engine = env.engine()
        try:
            if env.fresh_tables:
                await reset_tables(engine, TRUNCATE)
            source, lead_ids = await seed(engine, run, self.leads, self.providers)

            async def distributed() -> int:
                async with engine.connect() as connection:
                    return int(await connection.scalar(DISTRIBUTED, {"source": source}) or 0)

            async with channel(env.rabbitmq_url) as chan:
                await declare_topology(chan)
                await purge_topology(chan)
                events = await chan.get_exchange(EVENTS_EXCHANGE)
                await publish_all(events, [("lead.approved", lead_approved(lead, approved_by)) for lead in lead_ids])
                worker = start_service(checkout, "distribution-worker", env, self.port)
                async with running(worker, wait_ready=False) as service:
                    groups = Groups(database_name(env.database_url), {"distribution-worker": [service.process.pid]})
                    drain = await time_drain(
                        distributed, self.leads, service, timeout_s=max(300, self.leads), groups=groups
                    )
                # Stopped gracefully: every handled delivery is acked, so a drained queue is an empty one.
                await wait_until(
                    lambda: self._empty(chan), 10, f"{DISTRIBUTION.name} queue empty after the worker stopped"
                )
            async with engine.connect() as connection:
                assigned = int(await connection.scalar(ASSIGNED, {"source": source}) or 0)
            if assigned != self.leads * min(self.providers, MAX_PROVIDERS_PER_LEAD):
                raise BenchError(f"{assigned} assignments for {self.leads} leads and {self.providers} providers")
            raw = await consume_and_ack(
                env.rabbitmq_url, [lead_approved(lead, approved_by) for lead in lead_ids], prefetch=PREFETCH,
                timeout_s=120, groups=Groups(database_name(env.database_url)),
            )  # fmt: skip
        finally:
            async with channel(env.rabbitmq_url) as chan:
                await declare_topology(chan)
                await purge_topology(chan)
            await engine.dispose()
        return Measurement(
            value=drain.rate, baseline=raw.rate, count=drain.items, load=load,
            details={"cpu_per_item_ms": drain.cpu_per_item_ms,
                     **cpu_details(drain.machine, drain.items, target_rate=TARGET * raw.rate),
                     **cpu_details(raw.machine, raw.items, "baseline_")},
        )  # fmt: skip

    @staticmethod
    async def _empty(chan: aio_pika.abc.AbstractChannel) -> bool:
        return await depth(chan, DISTRIBUTION.name) == 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.distribution", description=__doc__)
    parser.add_argument("--leads", type=int, default=Distribution.leads)
    parser.add_argument("--providers", type=int, default=Distribution.providers)
    parser.add_argument("--port", type=int, default=Distribution.port, help="the worker's HTTP port")
    arguments, rest = parser.parse_known_args()
    run_alone(Distribution(leads=arguments.leads, providers=arguments.providers, port=arguments.port), rest)


if __name__ == "__main__":
    main()
