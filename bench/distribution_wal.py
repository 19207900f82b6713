"""The distribution transaction's cost inside PostgreSQL, empty against 1,000,000 assignments, with the assignment
ids the database draws at random against the time-ordered ids the worker gives: raw leads/s at the worker's
concurrency (as bench.distribution_overlap's baseline) and, per settlement, its execution time, buffers and WAL
(EXPLAIN ANALYZE, BUFFERS, WAL). No service runs: this is the ceiling the worker's figures stand under.

    python -m bench.distribution_wal [--leads 600] [--history 1000000] [--rounds 2] [--reuse-history]

Truncates the distribution tables of the test database first (as the other benchmarks do), then seeds the
history with COPY. Prints only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from bench.distribution_overlap import (
    RAW_READ,
    RAW_SETTLE,
    Offer,
    market,
    plain_url,
    raw_choice,
    seed_history,
    seed_market,
    time_ordered_uuid,
)
from bench.harness import BenchEnv, load_average, machine

CONCURRENCY = 10
EXPLAINED = 40
"""Settlements explained per measurement (each one a lead of its own)."""
TRUNCATE = "TRUNCATE leads, assignments, ledger_entries, processed_messages, subscriptions, providers CASCADE"
# The same statement with the ids PostgreSQL draws (gen_random_uuid()): what the worker sent before.
RANDOM_IDS_SETTLE = RAW_SETTLE.replace(
    "INSERT INTO assignments (id, lead_id,", "INSERT INTO assignments (lead_id,"
).replace("SELECT wanted.assignment_id, $1,", "SELECT $1,")


async def settle(db: asyncpg.Connection, lead: uuid.UUID, *, ordered: bool, explain: bool) -> dict[str, float]:
    rows = await db.fetch(RAW_READ, lead)
    chosen, unpaid = raw_choice([match for match in rows if match["id"] is not None])
    chosen.sort(key=lambda subscription: subscription["provider_id"])
    arguments = [
        lead, rows[0]["status"], [c["provider_id"] for c in chosen], [c["id"] for c in chosen],
        [c["price_cents"] for c in chosen], f"raw:{lead}", "distributed" if chosen else "unassigned", unpaid,
        [time_ordered_uuid() for _ in chosen],
    ]  # fmt: skip
    statement = RAW_SETTLE if ordered else RANDOM_IDS_SETTLE  # the random one leaves its wanted ids unused
    if not explain:
        await db.fetch(statement, *arguments)
        return {}
    plan = json.loads(await db.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) {statement}", *arguments))[0]
    top = plan["Plan"]
    return {
        "exec_ms": plan["Execution Time"],
        "buffers_hit": top.get("Shared Hit Blocks", 0),
        "buffers_read": top.get("Shared Read Blocks", 0),
        "buffers_dirtied": top.get("Shared Dirtied Blocks", 0),
        "wal_fpi": top.get("WAL FPI", 0),
        "wal_bytes": top.get("WAL Bytes", 0),
    }


async def leads_per_second(url: str, leads: Sequence[uuid.UUID], *, ordered: bool) -> float:
    connections = [await asyncpg.connect(url) for _ in range(CONCURRENCY)]
    queue = list(leads)

    async def work(db: asyncpg.Connection) -> None:
        while queue:
            await settle(db, queue.pop(), ordered=ordered, explain=False)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(work(db) for db in connections))
        return len(leads) / (time.perf_counter() - started)
    finally:
        for db in connections:
            await db.close()


async def measure(url: str, offers: Sequence[Offer], leads: int, label: str, *, ordered: bool) -> str:
    db = await asyncpg.connect(url)
    try:
        seeded = await seed_market(db, f"wal-{uuid.uuid4().hex[:6]}", offers, leads + EXPLAINED, every_lead=False)
        load = load_average()
        rate = await leads_per_second(url, seeded.raw_leads[:leads], ordered=ordered)
        explained = [await settle(db, lead, ordered=ordered, explain=True) for lead in seeded.worker_leads[:EXPLAINED]]
        assignments = await db.fetchval("SELECT count(*) FROM assignments")
    finally:
        await db.close()
    median = {name: statistics.median(e[name] for e in explained) for name in explained[0]}
    return (
        f"| {label} | {'time-ordered' if ordered else 'random'} | {assignments:,} | {rate:.0f} "
        f"| {median['exec_ms']:.2f} | {median['buffers_hit']:.0f} / {median['buffers_read']:.0f} / "
        f"{median['buffers_dirtied']:.0f} | {median['wal_fpi']:.0f} | {median['wal_bytes'] / 1024:.1f} | {load:.1f} |"
    )


async def seed_empty_then_history(
    url: str, offers: Sequence[Offer], options: argparse.Namespace, rows: list[str]
) -> None:
    db = await asyncpg.connect(url)
    await db.execute(TRUNCATE)
    await db.close()
    for _ in range(options.rounds):
        for ordered in (False, True):
            rows.append(await measure(url, offers, options.leads, "empty", ordered=ordered))
            print(rows[-1], flush=True)
    db = await asyncpg.connect(url)
    try:
        history = await seed_market(db, f"wal-history-{uuid.uuid4().hex[:6]}", offers, 1, every_lead=False)
        await seed_history(db, history, offers, options.history, "wal-history")
    finally:
        await db.close()


async def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.distribution_wal", description=__doc__)
    parser.add_argument("--leads", type=int, default=600, help="leads per leads/s figure")
    parser.add_argument("--history", type=int, default=1_000_000, help="assignments seeded before the second half")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--reuse-history", action="store_true",
        help="no truncation and no empty rounds: measure again on a database an earlier run left with its history",
    )  # fmt: skip
    options = parser.parse_args(argv)
    url = plain_url(BenchEnv.from_environ().database_url)
    offers = market(50, every_lead=False)
    rows = [
        "| database | assignment ids | assignments | raw leads/s (10 connections) | settlement exec ms "
        "| buffers hit / read / dirtied | WAL full-page images | WAL kB | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    if not options.reuse_history:
        await seed_empty_then_history(url, offers, options, rows)
    for _ in range(options.rounds):
        for ordered in (False, True):
            rows.append(await measure(url, offers, options.leads, f"{options.history:,}", ordered=ordered))
            print(rows[-1], flush=True)
    print(f"\n{machine()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, medians of {EXPLAINED} settlements per row")
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
