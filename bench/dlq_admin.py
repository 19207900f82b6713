"""Admin DLQ reads at a million stored entries: latency percentiles of every list page and filter, the groups,
free-text search, time windows and one entry's detail, through the dlq-service's HTTP API, eight clients at once.

Each read is asked `requests` times by `concurrency` clients sharing the work, each asking again as soon as its
answer is in (a closed loop); the figure is its p99 (and p50) in milliseconds as the client saw it, from sending
the request to the answer's last byte, beside the target (25 ms; free text 100 ms). The clients are wrk's
connections (bench/dlq_admin.lua: every answer's status checked and its entries counted), not Python: an httpx
client parsing each 40 kB page in one Python process competed with the service for the same two cores, and its
p99 was two to four times wrk's against the same service at the same load. Service CPU per request is the
dlq-service's processes' CPU time over the read's answers (and its two warm-up asks, made with httpx). The store
is seeded with COPY to `stored` entries first (bench/dlq_seed.py; kept between runs). With --with-capture the run
also measures DLQ capture into that store (bench/dlq_capture.py) and writes both to docs/BENCHMARKS.md.

    python -m bench.dlq_admin [--stored 1000000] [--requests 200] [--runs 1] [--port N] [--workers N]
                              [--with-capture] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pydantic.fields import FieldInfo
from sqlalchemy import func, select
from sqlmodel import col

from bench.dlq_capture import DlqCapture
from bench.dlq_seed import QUEUES, SEED_PREFIX, groups, seed
from bench.harness import ROOT, BenchEnv, load_average, machine, running, start_service
from bench.machine_cpu import CpuUse, Groups, cpu_details, database_name, since, snapshot
from bench.report import header, single_table, write_section
from bench.runner import measure_runs
from bench.throughput import command_line, revision
from bench.wrk import run_wrk
from libs.auth import Principal, Tokens
from libs.auth.tokens import AuthSettingsMixin
from libs.db.keyset import encode_cursor
from libs.db.tables import DeadLetter

LIST = "/api/v1/admin/queues/dlq"
TARGET_MS = 25.0
FREE_TEXT_TARGET_MS = 100.0
SECTION = "DLQ at a million entries: latest bench.dlq_admin run"
SCRIPT = Path(__file__).with_name("dlq_admin.lua")
LISTED = '"body_bytes":'
"""A field every entry of a page has once: how the load generator counts a page's entries."""


@dataclass(frozen=True)
class Read:
    name: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    free_text: bool = False
    marker: str = LISTED
    """What occurs once per row of the answer (an entry of a page, a group, the one entry of a detail)."""

    @property
    def target_ms(self) -> float:
        return FREE_TEXT_TARGET_MS if self.free_text else TARGET_MS


@dataclass(frozen=True)
class Latency:
    read: Read
    p50_ms: float
    p99_ms: float
    rows: int
    """Entries on the page (groups for the groups read): a read that finds nothing is named so."""
    cpu_ms: float = 0.0
    """The dlq-service process's CPU time per request: on a busy machine, steadier than the latencies."""
    failed: int = 0
    """Answers other than 200 (a statement timeout is a 500): timed like the others, and shown."""
    load: float = 0.0
    """The machine's 1-minute load average as the read's run ended: what the latencies shared the cores with."""
    requests: int = 0
    """Answers timed (wrk stops at the number asked, give or take the ones in flight)."""
    machine: CpuUse | None = None
    """Where the machine's cores went while wrk asked (bench/machine_cpu.py)."""


async def reads(env: BenchEnv) -> list[Read]:
    """Every page and filter the API offers, with values taken from the seeded store: a deep page (its cursor
    half-way down the list), each equality filter, a recent and an old time window, free text that matches
    one entry, many entries or none, the groups and one entry's detail."""
    engine = env.engine()
    try:
        async with engine.connect() as connection:
            middle = (
                await connection.execute(
                    select(col(DeadLetter.created_at), col(DeadLetter.id))
                    .order_by(col(DeadLetter.created_at).desc(), col(DeadLetter.id).desc())
                    .offset(int(await connection.scalar(select(func.count()).select_from(DeadLetter)) or 0) // 2)
                    .limit(1)
                )
            ).one()
            some_id = await connection.scalar(
                select(col(DeadLetter.id)).where(col(DeadLetter.queue_name).startswith(SEED_PREFIX)).limit(1)
            )
            rare_email = await connection.scalar(
                select(func.jsonb_extract_path_text(col(DeadLetter.payload), "email"))
                .where(col(DeadLetter.queue_name) == QUEUES[2])
                .limit(1)
            )
    finally:
        await engine.dispose()
    now = datetime.now(UTC)
    big, small = groups()[0], groups()[-1]
    window = {"recent hour": (now - timedelta(hours=1), now),
              "a day two weeks ago": (now - timedelta(days=15), now - timedelta(days=14)),
              "a week": (now - timedelta(days=7), now)}  # fmt: skip
    return [
        Read("first page", LIST),
        Read("deep page (cursor half-way)", LIST, {"cursor": encode_cursor(middle.created_at, middle.id)}),
        Read("status failed", LIST, {"status": "failed"}),
        Read("status retrying", LIST, {"status": "retrying"}),
        Read("queue", LIST, {"queue": QUEUES[1]}),
        Read("reason expired", LIST, {"reason": "expired"}),
        Read("error type (rare)", LIST, {"error_type": small.error_type}),
        Read("fingerprint (large group)", LIST, {"fingerprint": big.fingerprint}),
        Read("queue + status", LIST, {"queue": QUEUES[3], "status": "failed"}),
        *(Read(f"time window: {name}", LIST, {"from": start.isoformat(), "to": end.isoformat()})
          for name, (start, end) in window.items()),
        Read("free text: one entry", LIST, {"q": str(rare_email)}, free_text=True),
        Read("free text: many entries", LIST, {"q": "committed"}, free_text=True),
        Read("free text: no match", LIST, {"q": "zebra-unicorn"}, free_text=True),
        Read("free text: two words", LIST, {"q": "provider deadlock"}, free_text=True),
        Read("groups", f"{LIST}/groups", marker='"sample_error":'),
        Read("detail", f"{LIST}/{some_id}", marker='"raw_body_base64":'),
    ]  # fmt: skip


def admin_token(env: BenchEnv) -> str:
    """An admin's token as the gateway's login issues it (password and code), signed with the run's secret."""
    fields: Mapping[str, FieldInfo] = vars(AuthSettingsMixin)
    tokens = Tokens(env.settings["JWT_SECRET"], fields["jwt_issuer"].default, fields["jwt_audience"].default, 3600)
    return tokens.issue(Principal(subject=str(uuid.uuid4()), role="admin", provider_id=None, amr=("pwd", "otp")))


async def measure_read(url: str, token: str, read: Read, requests: int, concurrency: int) -> Latency:
    """`requests` asks of one read by `concurrency` wrk connections at once; failed answers are counted, not
    hidden, and the entries of every answer counted (the fewest shown)."""
    target = str(httpx.URL(url + read.path, params=read.params))
    result = await run_wrk(
        ["-t1", f"-c{concurrency}", "-d600s", "--timeout", "30s", "-s", str(SCRIPT), target],
        {"BENCH_TOKEN": token, "BENCH_REQUESTS": str(requests), "BENCH_MARKER": read.marker},
        read.name, stop_at=b"BENCH_ENOUGH",
    )  # fmt: skip
    return Latency(
        read, result["p50_us"] / 1000, result["p99_us"] / 1000, max(result["rows_min"], 0),
        failed=result["failed"], requests=result["requests"],
    )  # fmt: skip


@dataclass(frozen=True)
class AdminReads:
    stored: int = 1_000_000
    requests: int = 200
    concurrency: int = 8
    port: int = 18531
    workers: int | None = None
    """HTTP_WORKERS of the service; None keeps its own default (a checkout without the setting runs one)."""

    async def measure(self, checkout: Path, env: BenchEnv) -> tuple[list[Latency], float, float]:
        """Latencies of every read, seconds spent seeding, load average as it started."""
        engine = env.engine()
        try:
            seeded_s = await seed(engine, self.stored)
        finally:
            await engine.dispose()
        chosen = await reads(env)
        load = load_average()
        token = admin_token(env)
        headers = {"Authorization": f"Bearer {token}"}
        extra = {"HTTP_WORKERS": str(self.workers)} if self.workers else None
        latencies = []
        async with (
            running(start_service(checkout, "dlq-service", env, self.port, extra=extra)) as service,
            httpx.AsyncClient(base_url=service.url(""), headers=headers, timeout=30) as client,
        ):
            groups = Groups(database_name(env.database_url), {"dlq-service": [service.process.pid]})
            for read in chosen:
                cpu = service.cpu_seconds()
                for _ in range(2):  # warm the connections and the service's statement cache
                    (await client.get(read.path, params=read.params)).raise_for_status()
                machine = snapshot(groups)
                latency = await measure_read(service.url(""), token, read, self.requests, self.concurrency)
                use = since(machine, groups)
                cpu_ms = (service.cpu_seconds() - cpu) * 1000 / (latency.requests + 2)
                latencies.append(dataclasses.replace(latency, cpu_ms=cpu_ms, load=load_average(), machine=use))
        return latencies, seeded_s, load


MACHINE_COLUMNS = {
    "machine busy": "cpu_machine_busy_ms",
    "dlq-service": "cpu_dlq_service_ms",
    "PostgreSQL": "cpu_postgresql_ms",
    "wrk": "cpu_load_generator_ms",
    "other": "cpu_other_ms",
}
"""The machine CPU account's columns, in ms per request: what the read's latency shared the cores with."""


def machine_cells(latency: Latency) -> str:
    if latency.machine is None:
        return " - |" * (len(MACHINE_COLUMNS) + 1)
    details = cpu_details(latency.machine, latency.requests)
    cells = [f"{details[name]:.2f}" for name in MACHINE_COLUMNS.values()]
    return "".join(f" {cell} |" for cell in [*cells, f"{latency.machine.idle_share:.2f}"])


def latency_table(latencies: Sequence[Latency]) -> list[str]:
    machine = "".join(f" {name} CPU ms/request |" for name in MACHINE_COLUMNS)
    lines = [
        "| read | p50 ms | p99 ms | target p99 ms | service CPU ms per request | rows on the page | failed | load |"
        f"{machine} machine idle share |",
        "|---|---|---|---|---|---|---|---|" + "---|" * (len(MACHINE_COLUMNS) + 1),
    ]
    for latency in latencies:
        mark = "" if latency.p99_ms <= latency.read.target_ms else " (over)"
        lines.append(f"| {latency.read.name} | {latency.p50_ms:.1f} | {latency.p99_ms:.1f}{mark} "
                     f"| {latency.read.target_ms:g} | {latency.cpu_ms:.1f} | {latency.rows} "
                     f"| {latency.failed} | {latency.load:.1f} |{machine_cells(latency)}")  # fmt: skip
    return lines


async def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dlq_admin", description=__doc__)
    parser.add_argument("--checkout", type=Path, default=ROOT)
    parser.add_argument("--stored", type=int, default=AdminReads.stored)
    parser.add_argument("--requests", type=int, default=AdminReads.requests)
    parser.add_argument("--port", type=int, default=AdminReads.port)
    parser.add_argument("--workers", type=int, default=None, help="HTTP_WORKERS (default: the service's own)")
    parser.add_argument("--runs", type=int, default=1, help="runs of the capture figure (--with-capture)")
    parser.add_argument("--letters", type=int, default=DlqCapture.letters)
    parser.add_argument("--prefetch", type=int, default=DlqCapture.prefetch, help="the service's, for the baseline")
    parser.add_argument("--with-capture", action="store_true", help="also DLQ capture into the stored entries")
    parser.add_argument("--write", action="store_true", help="write the section of docs/BENCHMARKS.md")
    options = parser.parse_args(argv)
    env = BenchEnv.from_environ()
    benchmark = AdminReads(stored=options.stored, requests=options.requests, port=options.port, workers=options.workers)
    latencies, seeded_s, load = await benchmark.measure(options.checkout, env)
    lines = [
        *header(SECTION, command_line("bench.dlq_admin", argv), machine(), f"{datetime.now(UTC):%Y-%m-%d}",
                options.runs),
        f"Checkout: {revision(options.checkout)}. {options.stored:,} entries stored (seeding took {seeded_s:.0f} s; "
        f"0 when already there); each read asked {options.requests} times by {benchmark.concurrency} clients at "
        f"once; HTTP_WORKERS {benchmark.workers or 'as the service defaults'}; 1-minute load average {load:.1f} as it "
        "started.",
        "",
        *latency_table(latencies),
        "",
    ]  # fmt: skip
    if options.with_capture:
        capture = DlqCapture(options.letters, options.port + 1, options.stored, options.prefetch)
        summaries = await measure_runs([capture], options.checkout, env, options.runs)
        lines += single_table([capture], summaries)
    print("\n".join(lines))
    if options.write:
        write_section(SECTION, lines)


if __name__ == "__main__":
    import sys

    asyncio.run(main(sys.argv[1:]))
