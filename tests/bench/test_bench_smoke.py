"""The throughput benchmarks still work: each runs at a tiny size against this checkout's services on the real
broker and database and yields a figure beside its baseline. Speed is never asserted here (`task bench` is where
figures are taken)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.distribution import Distribution
from bench.distribution_overlap import Overlap, Run
from bench.dlq_capture import DlqCapture
from bench.harness import GENERATED_SECRETS, BenchEnv
from bench.ingest import Ingest

pytestmark = [pytest.mark.broker, pytest.mark.database, pytest.mark.stack]
ROOT = Path(__file__).resolve().parents[2]
MACHINE_ACCOUNT = {"cpu_machine_busy_ms", "machine_idle_share", "cpu_other_ms", "cpu_postgresql_ms", "cpu_rabbitmq_ms",
                   "rate_target_needs", "rate_cores_allow", "baseline_machine_idle_share"}  # fmt: skip
"""Details every figure gives from the machine CPU account (bench/machine_cpu.py), for its window and its
baseline's."""


# The bench's lead.submitted rows still staged: its sources are named bench-<run>; an outbox row names its lead in its
# message id, lead.submitted:<id>.
BENCH_RUNS_STAGED = text(
    "SELECT count(*) FROM outbox WHERE message_type = 'lead.submitted' AND CAST(substr(message_id, 16) AS uuid) IN "
    "(SELECT leads.id FROM leads JOIN lead_sources ON lead_sources.id = leads.source_id "
    "WHERE lead_sources.name LIKE 'bench-%')"
)


@pytest.fixture
def bench_env(database_url: str, rabbitmq_url: str, service_env: dict[str, str], tmp_path: Path) -> BenchEnv:
    """The suite's own service environment (plus any secret a service requires that it lacks); its database keeps
    its other rows: each benchmark counts only what its own run made."""
    settings = {**{name: make() for name, make in GENERATED_SECRETS.items()}, **service_env}
    return BenchEnv(database_url, rabbitmq_url, settings, log_dir=tmp_path, fresh_tables=False)


async def test_ingest_benchmark_measures_the_gateway_and_the_constant_route(bench_env: BenchEnv) -> None:
    measurement = await Ingest(duration_s=1, connections=4, warmup_s=1, port=18551, baseline_port=18552).measure(
        ROOT, bench_env
    )
    assert measurement.count > 0
    assert measurement.value > 0
    assert measurement.baseline > 0
    assert {"p50_ms", "p99_ms", "baseline_p99_ms", "cpu_ingest_gateway_ms", "baseline_cpu_constant_route_ms"} <= set(
        measurement.details
    )
    assert set(measurement.details) >= MACHINE_ACCOUNT
    assert 0 <= measurement.details["machine_idle_share"] <= 1


async def test_ingest_benchmark_leaves_no_vhost_and_no_staged_event_behind(bench_env: BenchEnv) -> None:
    """A run's events go to a vhost of its own, deleted once the relay has published them: nothing of it reaches
    the suite's queues, and no staged row is left for the next gateway on this database to publish."""
    await Ingest(duration_s=1, connections=4, warmup_s=1, port=18554, baseline_port=18555).measure(ROOT, bench_env)
    management = urlsplit(bench_env.settings["RABBITMQ_MANAGEMENT_URL"])
    auth = (unquote(management.username or ""), unquote(management.password or ""))
    async with httpx.AsyncClient(base_url=f"http://{management.hostname}:{management.port}", auth=auth) as api:
        vhosts = (await api.get("/api/vhosts")).json()
    assert not [vhost["name"] for vhost in vhosts if "-bench-ingest-" in vhost["name"]]
    engine = create_async_engine(bench_env.database_url)
    try:
        async with engine.connect() as connection:
            staged = await connection.scalar(BENCH_RUNS_STAGED)
    finally:
        await engine.dispose()
    assert staged == 0


async def test_distribution_benchmark_times_every_lead_it_queued(bench_env: BenchEnv) -> None:
    measurement = await Distribution(leads=20, port=18553).measure(ROOT, bench_env)
    assert measurement.count == 20
    assert measurement.value > 0
    assert measurement.baseline > 0
    assert MACHINE_ACCOUNT | {"cpu_distribution_worker_ms"} <= set(measurement.details)


async def test_distribution_with_emails_accounts_for_each_worker_and_both_baselines(bench_env: BenchEnv) -> None:
    measurement = await Overlap(Run(leads=20, providers=5, port=19561)).measure(ROOT, bench_env)
    assert measurement.count == 20
    assert measurement.baseline > 0
    expected = {"cpu_distribution_worker_ms", "cpu_email_worker_ms", "cpu_smtp_sink_ms", "rate_cores_allow",
                "raw_postgresql_cpu_load_generator_ms", "consume_ack_machine_idle_share"}  # fmt: skip
    assert expected <= set(measurement.details)
    assert measurement.details["cpu_email_worker_ms"] > 0


async def test_dlq_capture_benchmark_times_every_dead_letter_it_queued(bench_env: BenchEnv) -> None:
    measurement = await DlqCapture(letters=30, port=18554).measure(ROOT, bench_env)
    assert measurement.count == 30
    assert measurement.value > 0
    assert measurement.baseline > 0
    assert MACHINE_ACCOUNT | {"cpu_dlq_service_ms"} <= set(measurement.details)
