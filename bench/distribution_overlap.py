"""Distribution at scale: approved leads distributed per second by distribution-worker for a market of providers
whose subscriptions overlap (or a few providers each taking every lead), with the email path running, against
min(raw consume+ack, raw PostgreSQL running the same distribution transaction at the same concurrency) in the
same run; the same after 1,000,000 assignments exist (seeded with COPY) against an empty database; telemetry on
against off. Each figure also gives the worker's statements per lead, the deadlocks of the run and the machine CPU
account of the drain and of each baseline (bench/machine_cpu.py: distribution-worker, email-worker, the SMTP sink,
PostgreSQL, RabbitMQ, this process, other; idle share; the rate the target needs beside the rate the cores allow).

    python -m bench.distribution_overlap [--only overlap,every_lead,million,telemetry,replicas] [--runs 1]
        [--leads 2000] [--checkout DIR] [--before DIR --before-revision 0006] [--write]

--before measures that checkout too, alternating sides, and prints (with --write, writes) a before/after table;
--before-revision migrates the test database to that revision for the before side and back to head after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
import asyncpg
import orjson
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.broker import channel, consume_and_ack, declare_topology, depth, publish_all, purge_topology
from bench.distribution import lead_approved
from bench.harness import (
    ROOT,
    BenchEnv,
    BenchError,
    Drain,
    Service,
    imports_from,
    load_average,
    machine,
    running,
    start_service,
    time_drain,
    wait_until,
)
from bench.machine_cpu import Groups, cpu_details, database_name, own_threads, since, snapshot
from bench.report import Benchmark, Measurement, Summary, comparison_table, header, single_table, write_section
from bench.runner import measure_once
from bench.throughput import command_line, revision
from libs.messaging.topology import DISTRIBUTION, EVENTS_EXCHANGE

SECTION = "Distribution: overlap, a million assignments, telemetry"
PREFETCH = 10
"""The worker's default prefetch, hence its handler concurrency; its pool holds as many connections (5 + 5)."""
OVERLAP_TARGET = 0.5
EVERY_LEAD_TARGET = 0.3
MAX_PROVIDERS_PER_LEAD = 3
"""The worker's default MAX_PROVIDERS_PER_LEAD, which the benchmark leaves as it is."""
EMAIL_WORKER_OFFSET = 20
SMTP_OFFSET = 30
"""Ports after a run's first one: workers take the first 20, so a run needs 31 ports from `--port` on."""
PROBE = Path(__file__).with_name("statement_probe")
CATEGORIES = ("roofing", "solar", "hvac")
ZIPS = tuple(f"941{n:02d}" for n in range(20))
CONTACT = orjson.dumps({"name": "Bench Lead", "email": "lead@example.com", "phone": "+1 415 555 0100"}).decode()
TRUNCATE = (
    "TRUNCATE leads, lead_sources, assignments, ledger_entries, subscriptions, providers, processed_messages, "
    "email_log CASCADE"
)


# The market: who subscribes to what, drawn from a seed so that every run (and both sides of a comparison) sees
# the same one.


@dataclass(frozen=True)
class Offer:
    """One provider and its one subscription."""

    category: str
    zips: tuple[str, ...]
    zip_prefix: str | None
    price_cents: int
    daily_cap: int | None


def market(providers: int, every_lead: bool, seed: int = 12) -> list[Offer]:
    """`every_lead`: all providers subscribe to the one category and zip every lead has. Otherwise each provider
    takes one of three categories in 3 to 8 of 20 zip codes (one in ten the whole 941 prefix), at one of four
    prices, one in five under a daily cap: about six candidates per lead, three of them assigned."""
    if every_lead:
        return [Offer(CATEGORIES[0], (ZIPS[0],), None, 100, None) for _ in range(providers)]
    rng = random.Random(seed)
    offers = []
    for _ in range(providers):
        prefix = "941" if rng.random() < 0.1 else None
        offers.append(
            Offer(
                category=rng.choice(CATEGORIES),
                zips=() if prefix else tuple(rng.sample(ZIPS, rng.randint(3, 8))),
                zip_prefix=prefix,
                price_cents=rng.choice((100, 150, 200, 250)),
                daily_cap=40 if rng.random() < 0.2 else None,
            )
        )
    return offers


def lead_mix(count: int, every_lead: bool, seed: int) -> list[tuple[str, str]]:
    """(category, zip) of each lead."""
    if every_lead:
        return [(CATEGORIES[0], ZIPS[0])] * count
    rng = random.Random(seed)
    return [(rng.choice(CATEGORIES), rng.choice(ZIPS)) for _ in range(count)]


def plain_url(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@dataclass
class Seeded:
    source: uuid.UUID
    providers: list[uuid.UUID]
    subscriptions: list[uuid.UUID]
    worker_leads: list[uuid.UUID]
    raw_leads: list[uuid.UUID]


async def seed_market(
    db: asyncpg.Connection, run: str, offers: Sequence[Offer], leads: int, every_lead: bool
) -> Seeded:
    """Providers funded for every lead (with the matching top-up rows), their subscriptions in the run's own
    categories, and two batches of approved leads of the same mix: one for the worker, one for raw PostgreSQL."""
    source = await db.fetchval(
        "INSERT INTO lead_sources (name, api_key_hash) VALUES ($1, $2) RETURNING id", f"bench-{run}", f"bench-{run}"
    )
    providers, subscriptions = [], []
    for number, offer in enumerate(offers):
        balance = offer.price_cents * leads * 2
        provider = await db.fetchval(
            "INSERT INTO providers (name, email, balance_cents) VALUES ($1, $2, $3) RETURNING id",
            f"bench-{run}-{number}", f"p{number}-{run}@example.com", balance,
        )  # fmt: skip
        await db.execute(
            "INSERT INTO ledger_entries (provider_id, kind, amount_cents) VALUES ($1, 'top_up', $2)", provider, balance
        )
        subscriptions.append(
            await db.fetchval(
                "INSERT INTO subscriptions (provider_id, category, zip_codes, zip_prefix, price_cents, daily_cap) "
                "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                provider,
                f"{run}-{offer.category}",
                list(offer.zips),
                offer.zip_prefix,
                offer.price_cents,
                offer.daily_cap,
            )
        )
        providers.append(provider)
    batches = []
    for batch, seed in (("w", 1), ("r", 2)):
        mix = lead_mix(leads, every_lead, seed)
        ids = [uuid.uuid4() for _ in mix]
        now = datetime.now(UTC)
        await db.copy_records_to_table(
            "leads",
            columns=["id", "source_id", "external_id", "category", "zip", "contact", "status", "decided_at"],
            records=[
                (lead, source, f"{run}-{batch}-{n}", f"{run}-{category}", zip_code, CONTACT, "approved", now)
                for n, (lead, (category, zip_code)) in enumerate(zip(ids, mix, strict=True))
            ],
        )
        batches.append(ids)
    return Seeded(source, providers, subscriptions, batches[0], batches[1])


async def seed_history(
    db: asyncpg.Connection, seeded: Seeded, offers: Sequence[Offer], assignments: int, run: str
) -> None:
    """`assignments` assignments of earlier days (three per lead, each with its ledger charge), by COPY, spread
    over the market's providers: the daily caps of today are untouched, so the run does the same work."""
    rng = random.Random(7)
    per_lead = MAX_PROVIDERS_PER_LEAD
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    lead_rows: list[tuple[object, ...]] = []
    assignment_rows: list[tuple[object, ...]] = []
    ledger_rows: list[tuple[object, ...]] = []
    charged: dict[uuid.UUID, int] = {}
    for number in range(0, assignments, per_lead):
        lead = uuid.uuid4()
        at = start - timedelta(seconds=rng.randint(60, 60 * 86_400))
        offer_numbers = rng.sample(range(len(offers)), min(per_lead, len(offers)))
        lead_rows.append((lead, seeded.source, f"{run}-h-{number}", "history", ZIPS[0], CONTACT, "distributed", at, at))
        for index in offer_numbers[: assignments - number]:
            assignment = uuid.uuid4()
            price = offers[index].price_cents
            assignment_rows.append(
                (assignment, lead, seeded.providers[index], seeded.subscriptions[index], price, "delivered", at)
            )
            ledger_rows.append((seeded.providers[index], "lead_charge", -price, assignment, at))
            charged[seeded.providers[index]] = charged.get(seeded.providers[index], 0) + price
    # What the history charged was topped up before it: every balance still equals its ledger.
    ledger_rows += [
        (provider, "top_up", cents, None, start - timedelta(days=61)) for provider, cents in charged.items()
    ]
    await db.copy_records_to_table(
        "leads",
        columns=["id", "source_id", "external_id", "category", "zip", "contact", "status", "decided_at", "created_at"],
        records=lead_rows,
    )
    await db.copy_records_to_table(
        "assignments",
        columns=["id", "lead_id", "provider_id", "subscription_id", "price_cents", "status", "created_at"],
        records=assignment_rows,
    )
    await db.copy_records_to_table(
        "ledger_entries",
        columns=["provider_id", "kind", "amount_cents", "assignment_id", "created_at"],
        records=ledger_rows,
    )
    for table in ("leads", "assignments", "ledger_entries"):
        await db.execute(f"VACUUM ANALYZE {table}")


# Raw PostgreSQL: the distribution the worker runs (distribution_worker/distribution.py and settlement.py), as
# plain SQL on asyncpg, at the worker's concurrency: what the database allows before any of our code
# (SQLAlchemy, FastStream, the consumer policy, telemetry) runs. One read, then one statement that is its own
# transaction.

RAW_READ = """
SELECT lead.status, lead.category, lead.zip, lead.trusted, matching.*
FROM (SELECT l.status, l.category, l.zip, s.trusted FROM leads l JOIN lead_sources s ON s.id = l.source_id
      WHERE l.id = $1) AS lead
LEFT JOIN LATERAL (
  SELECT s.id, s.provider_id, p.email, s.price_cents, p.low_balance_threshold_cents, s.last_assigned_at,
         s.created_at, s.daily_cap, p.balance_cents,
         CASE WHEN s.daily_cap IS NULL THEN 0 ELSE (
           SELECT count(*) FROM assignments a
           WHERE a.subscription_id = s.id AND a.created_at >= date_trunc('day', now())
         ) END AS assigned_today
  FROM subscriptions s JOIN providers p ON p.id = s.provider_id
  WHERE s.status = 'active' AND s.category = lead.category
    AND (lead.zip = ANY (s.zip_codes) OR (s.zip_prefix IS NOT NULL AND lead.zip LIKE s.zip_prefix || '%'))
) AS matching ON true
"""
RAW_SETTLE = """
WITH lead AS (SELECT id FROM leads WHERE id = $1 AND status = $2 FOR UPDATE),
wanted AS (
  SELECT * FROM unnest($3::uuid[], $4::uuid[], $5::bigint[], $9::uuid[])
    AS w(provider_id, subscription_id, price_cents, assignment_id)
  WHERE EXISTS (SELECT FROM lead)),
locked AS (
  SELECT id, balance_cents FROM providers WHERE id IN (SELECT provider_id FROM wanted) ORDER BY id FOR NO KEY UPDATE),
payable AS (
  SELECT coalesce(bool_and(locked.balance_cents >= wanted.price_cents), true) AND count(locked.id) = count(*) AS ok
  FROM wanted LEFT JOIN locked ON locked.id = wanted.provider_id),
first_delivery AS (
  INSERT INTO processed_messages (consumer, message_id)
  SELECT 'bench-raw', $6 FROM payable WHERE payable.ok AND EXISTS (SELECT FROM lead)
  ON CONFLICT DO NOTHING RETURNING message_id),
debited AS (
  UPDATE providers SET balance_cents = providers.balance_cents - wanted.price_cents FROM wanted
  WHERE providers.id = wanted.provider_id AND providers.balance_cents >= wanted.price_cents
    AND EXISTS (SELECT FROM first_delivery)
  RETURNING providers.id AS provider_id, providers.balance_cents AS balance_after_cents),
assigned AS (
  INSERT INTO assignments (id, lead_id, provider_id, subscription_id, price_cents)
  SELECT wanted.assignment_id, $1, wanted.provider_id, wanted.subscription_id, wanted.price_cents
  FROM wanted JOIN debited ON debited.provider_id = wanted.provider_id
  RETURNING id, provider_id, subscription_id, price_cents),
recorded AS (
  INSERT INTO ledger_entries (provider_id, kind, amount_cents, assignment_id)
  SELECT provider_id, 'lead_charge', -price_cents, id FROM assigned),
touched AS (
  UPDATE subscriptions SET last_assigned_at = clock_timestamp() FROM assigned
  WHERE subscriptions.id = assigned.subscription_id),
set_status AS (
  UPDATE leads SET status = $7, decided_at = coalesce(decided_at, now())
  WHERE id = $1 AND EXISTS (SELECT FROM first_delivery)),
pause_unpaid AS (
  UPDATE subscriptions SET status = 'paused', paused_reason = 'insufficient_balance'
  WHERE id = ANY ($8::uuid[]) AND status = 'active' AND EXISTS (SELECT FROM first_delivery))
SELECT payable.ok AS paid, EXISTS (SELECT FROM first_delivery) AS recorded, charged.*
FROM payable LEFT JOIN (
  SELECT assigned.id AS assignment_id, assigned.provider_id, debited.balance_after_cents
  FROM assigned JOIN debited ON debited.provider_id = assigned.provider_id) AS charged ON true
"""


def time_ordered_uuid() -> uuid.UUID:
    """The assignment ids the worker gives (UUIDv7, distribution_worker/settlement.py), so that raw PostgreSQL
    writes the same index pages the worker does."""
    random_bits = int.from_bytes(os.urandom(10), "big")
    rand_a, rand_b = (random_bits >> 62) & 0xFFF, random_bits & ((1 << 62) - 1)
    return uuid.UUID(int=time.time_ns() // 1_000_000 << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b)


def raw_choice(rows: Sequence[asyncpg.Record]) -> tuple[list[asyncpg.Record], list[uuid.UUID]]:
    """The worker's rule (distribution_worker/assignment.py): under the cap, one subscription per provider, the
    longest-waiting first, the first three that can pay; the ones that cannot are paused."""

    def fairness(row: asyncpg.Record) -> tuple[bool, datetime, datetime, uuid.UUID]:
        last = row["last_assigned_at"]
        return (last is not None, last or row["created_at"], row["created_at"], row["id"])

    best: dict[uuid.UUID, asyncpg.Record] = {}
    for row in sorted(rows, key=fairness):
        if row["daily_cap"] is None or row["assigned_today"] < row["daily_cap"]:
            best.setdefault(row["provider_id"], row)
    chosen: list[asyncpg.Record] = []
    unpaid: list[uuid.UUID] = []
    for row in sorted(best.values(), key=fairness):
        if len(chosen) >= MAX_PROVIDERS_PER_LEAD:
            break
        if row["balance_cents"] >= row["price_cents"]:
            chosen.append(row)
        else:
            unpaid.append(row["id"])
    return chosen, unpaid


async def raw_distribute(db: asyncpg.Connection, lead: uuid.UUID) -> None:
    rows = await db.fetch(RAW_READ, lead)
    row = rows[0]
    chosen, unpaid = raw_choice([match for match in rows if match["id"] is not None])
    chosen.sort(key=lambda subscription: subscription["provider_id"])
    await db.fetch(
        RAW_SETTLE, lead, row["status"], [c["provider_id"] for c in chosen], [c["id"] for c in chosen],
        [c["price_cents"] for c in chosen], f"raw:{lead}", "distributed" if chosen else "unassigned", unpaid,
        [time_ordered_uuid() for _ in chosen],
    )  # fmt: skip


async def raw_postgresql(database_url: str, leads: Sequence[uuid.UUID], concurrency: int, groups: Groups) -> Drain:
    """The distribution transaction on `concurrency` connections, each lead once, with the machine CPU account."""
    connections = [await asyncpg.connect(plain_url(database_url)) for _ in range(concurrency)]
    queue = list(reversed(leads))

    async def work(db: asyncpg.Connection) -> None:
        while queue:
            lead = queue.pop()
            await raw_distribute(db, lead)

    try:
        machine, started, cpu = snapshot(groups), time.perf_counter(), time.process_time()
        await asyncio.gather(*(work(db) for db in connections))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        return Drain(len(leads), seconds, cpu, since(machine, groups))
    finally:
        for db in connections:
            await db.close()


# The email path: email-worker sending to an SMTP server that accepts and drops every mail.


class DropMail:
    def __init__(self) -> None:
        self.accepted = 0
        self.threads: set[int] = set()
        """This process's threads the sink runs on (its event loop's, its executor's)."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.accepted += 1
        return "250 accepted"


@asynccontextmanager
async def smtp_sink(port: int) -> AsyncIterator[DropMail]:
    handler = DropMail()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    before = own_threads()
    # start() blocks this event loop until the sink serves: every thread new meanwhile is the sink's.
    controller.start()
    handler.threads = own_threads() - before
    try:
        yield handler
    finally:
        controller.stop()


STATEMENTS_WRITTEN_EVERY_S = 1.0
"""bench/statement_probe's WRITE_EVERY_S (that folder is put on the service's PYTHONPATH, not imported here)."""


@dataclass(frozen=True)
class Mails:
    """The mails the sink accepted while the worker drained its queue, and email-worker's CPU time meanwhile."""

    accepted: int
    cpu_seconds: float


# Checks that make a figure honest: the work was done, once, by the rules.

DONE = "SELECT count(*) FROM leads WHERE id = ANY ($1::uuid[]) AND status IN ('distributed', 'unassigned')"
CHECKS = {
    "assignments": "SELECT count(*) FROM assignments WHERE lead_id = ANY ($1::uuid[])",
    "distributed leads without an assignment": (
        "SELECT count(*) FROM leads l WHERE l.id = ANY ($1::uuid[]) AND l.status = 'distributed' "
        "AND NOT EXISTS (SELECT FROM assignments a WHERE a.lead_id = l.id)"
    ),
    "leads with more than three assignments": (
        "SELECT count(*) FROM (SELECT lead_id FROM assignments WHERE lead_id = ANY ($1::uuid[]) "
        "GROUP BY lead_id HAVING count(*) > 3) x"
    ),
    "assignments without exactly one charge of their price": (
        "SELECT count(*) FROM assignments a WHERE a.lead_id = ANY ($1::uuid[]) AND (SELECT count(*) FROM "
        "ledger_entries e WHERE e.assignment_id = a.id AND e.kind = 'lead_charge' AND e.amount_cents = -a.price_cents)"
        " <> 1"
    ),
    "providers whose balance is not their ledger": (
        "SELECT count(*) FROM providers p WHERE p.id = ANY ($1::uuid[]) AND p.balance_cents <> "
        "(SELECT coalesce(sum(amount_cents), 0) FROM ledger_entries e WHERE e.provider_id = p.id)"
    ),
}
DEADLOCKS = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
# Every connection opened to the benchmark's database (the workers', email-worker's, the benchmark's own few): a
# pool that closes and reopens connections shows here, and each one costs a server process, TLS and authentication.
SESSIONS = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
# Cluster-wide (other databases' writes included): what the run's commits wait for besides their own work.
WAL_AND_CHECKPOINTS = (
    "SELECT pg_current_wal_lsn()::text AS lsn, checkpoints_timed + checkpoints_req AS checkpoints FROM pg_stat_bgwriter"
)
WAL_SINCE = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)"


async def verify(db: asyncpg.Connection, leads: Sequence[uuid.UUID], providers: Sequence[uuid.UUID]) -> int:
    """Raises unless every rule held; the number of assignments made."""
    results = {
        name: int(await db.fetchval(sql, providers if "FROM providers" in sql else leads))
        for name, sql in CHECKS.items()
    }
    broken = {name: count for name, count in results.items() if name != "assignments" and count}
    if broken:
        raise BenchError(f"distribution broke its rules: {broken}")
    return results["assignments"]


# One distribution run: the worker draining a queue of approvals, then (optionally) the raw baselines.


@dataclass(frozen=True)
class Run:
    leads: int = 2000
    providers: int = 50
    every_lead: bool = False
    emails: bool = True
    workers: int = 1
    history: int = 0
    """Assignments of earlier days seeded (COPY) before the run."""
    baselines: bool = True
    telemetry: bool = True
    prefetch: int = PREFETCH
    """Each worker's PREFETCH (its handler concurrency); raw PostgreSQL runs on as many connections as all the
    workers together."""
    port: int = 18611
    """The first worker's HTTP port; further workers, email-worker and the SMTP sink take the ports after it."""

    @property
    def target(self) -> float:
        """Issue 12's ratio to the baseline: the machine CPU account says whether the cores allow it."""
        return EVERY_LEAD_TARGET if self.every_lead else OVERLAP_TARGET

    async def measure(self, checkout: Path, env: BenchEnv) -> Measurement:
        load = load_average()
        run = uuid.uuid4().hex[:8]
        offers = market(self.providers, self.every_lead)
        db = await asyncpg.connect(plain_url(env.database_url))
        try:
            if env.fresh_tables:
                await db.execute(TRUNCATE)
            seeded = await seed_market(db, run, offers, self.leads, self.every_lead)
            if self.history:
                await seed_history(db, seeded, offers, self.history, run)
            await db.execute("ANALYZE")
            deadlocks_before = int(await db.fetchval(DEADLOCKS))
            sessions_before = int(await db.fetchval(SESSIONS))
            server_before = await db.fetchrow(WAL_AND_CHECKPOINTS)
            drain, statements, mails = await self._worker_run(checkout, env, seeded)
            groups = Groups(database_name(env.database_url))
            wal_bytes = float(await db.fetchval(WAL_SINCE, server_before["lsn"]))
            checkpoints = int((await db.fetchrow(WAL_AND_CHECKPOINTS))["checkpoints"]) - server_before["checkpoints"]
            # Stats reach pg_stat_database when a session ends or within a second: the workers' have ended.
            await asyncio.sleep(1.5)
            deadlocks = int(await db.fetchval(DEADLOCKS)) - deadlocks_before
            sessions = int(await db.fetchval(SESSIONS)) - sessions_before
            assignments = await verify(db, seeded.worker_leads, seeded.providers)
            details: dict[str, float] = {
                "cpu_per_item_ms": drain.cpu_per_item_ms,
                "deadlocks": deadlocks,
                "db_sessions_opened": sessions,
                "assignments_per_lead": round(assignments / self.leads, 2),
                "cluster_wal_kb_per_lead": round(wal_bytes / 1024 / self.leads, 1),
                "cluster_checkpoints": checkpoints,
            }
            if statements is not None:
                details["statements_per_lead"] = round(statements / self.leads, 1)
            if self.emails:
                details["mails_accepted_in_run"] = mails.accepted
                if mails.accepted:
                    # email-worker competes with the distribution-worker for the same cores: its cost is part of
                    # the figure, so it is shown beside the worker's.
                    details["email_worker_cpu_per_mail_ms"] = round(1000 * mails.cpu_seconds / mails.accepted, 2)
            baseline = drain.rate
            if self.baselines:
                raw_pg = await raw_postgresql(env.database_url, seeded.raw_leads, self.concurrency, groups)
                await verify(db, seeded.raw_leads, seeded.providers)
                consume = await consume_and_ack(
                    env.rabbitmq_url, [lead_approved(lead, "bench") for lead in seeded.raw_leads],
                    prefetch=self.concurrency, timeout_s=120, groups=groups,
                )  # fmt: skip
                details |= {"raw_postgresql": round(raw_pg.rate, 1), "consume_ack": round(consume.rate, 1)}
                details |= cpu_details(raw_pg.machine, raw_pg.items, "raw_postgresql_")
                details |= cpu_details(consume.machine, consume.items, "consume_ack_")
                baseline = min(raw_pg.rate, consume.rate)
            details |= cpu_details(
                drain.machine, drain.items, target_rate=self.target * baseline if self.baselines else None
            )
        finally:
            await db.close()
        return Measurement(value=drain.rate, baseline=baseline, count=drain.items, load=load, details=details)

    @property
    def concurrency(self) -> int:
        """Leads handled at once by all the workers together."""
        return self.prefetch * self.workers

    async def _worker_run(self, checkout: Path, env: BenchEnv, seeded: Seeded) -> tuple[Drain, int | None, Mails]:
        counts = [Path(tempfile.mkstemp(prefix="fmhl-bench-statements-")[1]) for _ in range(self.workers)]
        db = await asyncpg.connect(plain_url(env.database_url))

        async def done() -> int:
            return int(await db.fetchval(DONE, seeded.worker_leads))

        try:
            async with channel(env.rabbitmq_url) as chan, smtp_sink(self.port + SMTP_OFFSET) as sink:
                await declare_topology(chan)
                await purge_topology(chan)
                events = await chan.get_exchange(EVENTS_EXCHANGE)
                await publish_all(
                    events, [("lead.approved", lead_approved(lead, "bench")) for lead in seeded.worker_leads]
                )
                async with self._email_worker(checkout, env) as mailer:
                    mailer_cpu = mailer.cpu_seconds() if mailer else 0.0
                    workers = [
                        start_service(checkout, "distribution-worker", env, self.port + n,
                                      extra=self._environ(checkout, env, self.port + n, counts[n]))
                        for n in range(self.workers)
                    ]  # fmt: skip
                    async with running_all(workers) as replicas:
                        services = {"distribution-worker": [replica.process.pid for replica in replicas.all()]}
                        if mailer:
                            services["email-worker"] = [mailer.process.pid]
                        groups = Groups(database_name(env.database_url), services, {"smtp_sink": sorted(sink.threads)})
                        drain = await time_drain(
                            done, self.leads, replicas, timeout_s=max(300, self.leads), groups=groups
                        )
                        await asyncio.sleep(STATEMENTS_WRITTEN_EVERY_S + 0.5)  # the probe's last count reaches its file
                    mails = Mails(sink.accepted, mailer.cpu_seconds() - mailer_cpu if mailer else 0.0)
                await wait_until(lambda: _empty(chan, DISTRIBUTION.name), 10, "distribution queue empty")
                await purge_topology(chan)
            statements = [json.loads(path.read_text() or "{}") for path in counts]
            total = sum(count.get("statements", 0) + count.get("control", 0) for count in statements)
            return drain, (total if all(statements) else None), mails
        finally:
            await db.close()
            for path in counts:
                path.unlink(missing_ok=True)

    def _environ(self, checkout: Path, env: BenchEnv, port: int, statements: Path | None) -> dict[str, str]:
        python_path = env.service_environ(checkout, port)["PYTHONPATH"]
        return {
            "PYTHONPATH": os.pathsep.join([str(PROBE), python_path]),
            "FMHL_BENCH_STATEMENTS": str(statements or ""),
            "TELEMETRY_ENABLED": str(self.telemetry).lower(),
            "PREFETCH": str(self.prefetch),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.port + SMTP_OFFSET),
        }

    @asynccontextmanager
    async def _email_worker(self, checkout: Path, env: BenchEnv) -> AsyncIterator[Service | None]:
        if not self.emails:
            yield None
            return
        port = self.port + EMAIL_WORKER_OFFSET
        service = start_service(checkout, "email-worker", env, port, extra=self._environ(checkout, env, port, None))
        async with running(service, wait_ready=True) as started:
            yield started


@dataclass
class Replicas(Service):
    """Several processes of one service timed as one: alive while all are, CPU time summed."""

    others: list[Service] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        return super().cpu_seconds() + sum(other.cpu_seconds() for other in self.others)

    def all(self) -> list[Service]:
        return [self, *self.others]

    def check_alive(self) -> None:
        super().check_alive()
        for other in self.others:
            other.check_alive()


@asynccontextmanager
async def running_all(starting: Sequence[Awaitable[Service]]) -> AsyncIterator[Replicas]:
    services = [await start for start in starting]
    first = services[0]
    try:
        yield Replicas(first.name, first.port, first.process, first.log, others=services[1:])
    finally:
        await asyncio.gather(*(service.stop() for service in services))


async def _empty(chan: aio_pika.abc.AbstractChannel, queue: str) -> bool:
    return await depth(chan, queue) == 0


# The figures.


@dataclass(frozen=True)
class Overlap:
    """Leads/s against min(consume+ack, raw PostgreSQL) of the same run."""

    run: Run = field(default_factory=Run)
    name: str = "overlap"
    unit = "leads/s"
    baseline_label = "min(consume+ack, raw PostgreSQL running the same transaction at the same concurrency)"

    @property
    def figure(self) -> str:
        shape = (f"{self.run.providers} providers each taking every lead" if self.run.every_lead
                 else f"{self.run.providers} providers with overlapping subscriptions")  # fmt: skip
        workers = f", {self.run.workers} worker processes" if self.run.workers > 1 else ""
        prefetch = f", prefetch {self.run.prefetch}" if self.run.prefetch != PREFETCH else ""
        emails = "running" if self.run.emails else "off"
        return f"distribution, {shape}{workers}{prefetch}, emails {emails}"

    async def measure(self, checkout: Path, env: BenchEnv) -> Measurement:
        return await self.run.measure(checkout, env)


@dataclass(frozen=True)
class Million:
    """Leads/s after `history` assignments exist, against the same run on an empty database."""

    run: Run = field(default_factory=lambda: Run(emails=False, baselines=False))
    history: int = 1_000_000
    name: str = "million"
    unit = "leads/s"
    baseline_label = "the same run on an empty database"

    @property
    def figure(self) -> str:
        return f"distribution, {self.run.providers} providers, emails off, after {self.history:,} assignments exist"

    async def measure(self, checkout: Path, env: BenchEnv) -> Measurement:
        empty = await self.run.measure(checkout, env)
        full = await replace(self.run, history=self.history).measure(checkout, env)
        details = {f"empty_{key}": value for key, value in empty.details.items()} | dict(full.details)
        return Measurement(full.value, empty.value, full.count, empty.load, details)


@dataclass(frozen=True)
class TelemetrySwitch:
    """Leads/s with telemetry on (the default), against TELEMETRY_ENABLED=false, in the same run."""

    run: Run = field(default_factory=lambda: Run(baselines=False))
    name: str = "telemetry"
    unit = "leads/s"
    baseline_label = "the same run with TELEMETRY_ENABLED=false"

    @property
    def figure(self) -> str:
        return f"distribution, {self.run.providers} providers, emails running, telemetry on"

    async def measure(self, checkout: Path, env: BenchEnv) -> Measurement:
        off = await replace(self.run, telemetry=False).measure(checkout, env)
        on = await self.run.measure(checkout, env)
        details = {f"off_{key}": value for key, value in off.details.items()} | dict(on.details)
        return Measurement(on.value, off.value, on.count, off.load, details)


def benchmarks(base: Run, only: str | None = None, history: int = 1_000_000) -> list[Benchmark]:
    """`base`: what every figure's run shares (leads, ports, prefetch, worker processes)."""
    every: list[Benchmark] = [
        Overlap(base),
        Overlap(replace(base, providers=3, every_lead=True, emails=False), name="every_lead"),
        Overlap(replace(base, providers=3, every_lead=True, emails=True), name="every_lead_emails"),
        Million(replace(base, emails=False, baselines=False), history=history),
        TelemetrySwitch(replace(base, baselines=False)),
        Overlap(replace(base, workers=2 * base.workers), name="replicas"),
    ]
    if not only:
        return every
    names = only.split(",")
    unknown = set(names) - {benchmark.name for benchmark in every}
    if unknown:
        raise BenchError(f"unknown benchmark(s) {sorted(unknown)}; known: {[b.name for b in every]}")
    return [benchmark for benchmark in every if benchmark.name in names]


def migrate(env: BenchEnv, revision: str) -> None:
    """Alembic of this checkout (which knows every revision) on the benchmark's database."""
    environ = {**os.environ, "DATABASE_URL": env.database_url}
    command = [sys.executable, "-m", "alembic", "upgrade" if revision == "head" else "downgrade", revision]
    if revision != "head":
        # Downgrading to a revision the database is already below would fail; upgrading to it first is a no-op
        # when it is already there.
        subprocess.run([sys.executable, "-m", "alembic", "upgrade", revision], cwd=ROOT, env=environ, check=False,
                       capture_output=True)  # fmt: skip
    subprocess.run(command, cwd=ROOT, env=environ, check=True, capture_output=True)


async def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.distribution_overlap", description=__doc__)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="checkout whose services run (after)")
    parser.add_argument("--before", type=Path, help="a checkout of the code before the change")
    parser.add_argument("--before-revision", help="schema revision the before side runs on (e.g. 0006)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--leads", type=int, default=2000)
    parser.add_argument("--history", type=int, default=1_000_000, help="assignments seeded for the million figure")
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--port", type=int, default=Run.port, help="first of the 31 ports a run uses")
    parser.add_argument("--prefetch", type=int, default=PREFETCH, help="each worker's PREFETCH")
    parser.add_argument("--workers", type=int, default=1, help="worker services (replicas: twice as many)")
    parser.add_argument("--write", action="store_true", help=f"write the section '{SECTION}' of docs/BENCHMARKS.md")
    options = parser.parse_args(argv)
    env = BenchEnv.from_environ()
    base = Run(
        leads=options.leads, port=options.port, prefetch=options.prefetch, workers=options.workers,
    )  # fmt: skip
    chosen = benchmarks(base, options.only, options.history)
    sides = {"after": options.checkout.resolve()}
    if options.before:
        sides["before"] = options.before.resolve()
    for checkout in sides.values():
        await imports_from(checkout, env)
    results: dict[str, dict[str, list[Measurement]]] = {side: {b.name: [] for b in chosen} for side in sides}
    for number in range(1, options.runs + 1):
        order = sorted(sides, reverse=number % 2 == 0)
        for benchmark in chosen:
            for side in order:
                if options.before_revision:
                    migrate(env, options.before_revision if side == "before" else "head")
                measurement = await measure_once(benchmark, sides[side], env, f"{side}, run {number}")
                results[side][benchmark.name].append(measurement)
    if options.before_revision:
        migrate(env, "head")
    summaries = {
        side: {name: Summary(tuple(runs)) for name, runs in by_name.items()} for side, by_name in results.items()
    }
    command = command_line("bench.distribution_overlap", argv)
    lines = [*header(SECTION, command, machine(), f"{datetime.now(UTC):%Y-%m-%d}", options.runs)]
    if options.before:
        lines += [
            f"Before: the checkout at {revision(sides['before'])}; after: the checkout at "
            f"{revision(sides['after'])}. The before side runs on schema "
            f"{options.before_revision or 'head'}.",
            "",
            *comparison_table(chosen, summaries["before"], summaries["after"]),
        ]
    lines += ["After:", "", *single_table(chosen, summaries["after"])]
    print("\n".join(lines))
    if options.write:
        write_section(SECTION, lines)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
