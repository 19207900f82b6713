"""The DLQ benchmarks at a million entries still work: each runs at a tiny size (a few seeded entries, a few
letters, a few requests) against this checkout's dlq-service on the real broker and database. Speed is never
asserted here (`python -m bench.dlq_admin` is where figures are taken)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.dlq_admin import AdminReads
from bench.dlq_capture import DlqCapture
from bench.dlq_seed import seeded
from bench.harness import GENERATED_SECRETS, BenchEnv

pytestmark = [pytest.mark.broker, pytest.mark.database, pytest.mark.stack]
ROOT = Path(__file__).resolve().parents[2]
STORED = 300


@pytest.fixture
def bench_env(database_url: str, rabbitmq_url: str, service_env: dict[str, str], tmp_path: Path) -> BenchEnv:
    """The suite's own service environment; its database keeps its other rows (the benchmarks count only their
    own run's entries, and seeding only adds)."""
    settings = {**{name: make() for name, make in GENERATED_SECRETS.items()}, **service_env}
    return BenchEnv(database_url, rabbitmq_url, settings, log_dir=tmp_path, fresh_tables=False)


async def test_capture_into_a_stored_table_seeds_it_and_times_every_dead_letter(bench_env: BenchEnv) -> None:
    measurement = await DlqCapture(letters=30, port=19551, stored=STORED).measure(ROOT, bench_env)
    engine = bench_env.engine()
    try:
        assert await seeded(engine) >= STORED
    finally:
        await engine.dispose()
    assert measurement.count == 30
    assert measurement.value > 0
    assert measurement.baseline > 0


async def test_admin_reads_benchmark_times_every_page_and_filter(bench_env: BenchEnv) -> None:
    latencies, _, _ = await AdminReads(stored=STORED, requests=4, port=19552).measure(ROOT, bench_env)
    names = [latency.read.name for latency in latencies]
    assert {"first page", "groups", "detail", "free text: no match", "time window: a week"} <= set(names)
    assert all(latency.p99_ms >= latency.p50_ms > 0 for latency in latencies)
    assert next(latency for latency in latencies if latency.read.name == "free text: no match").rows == 0
    assert next(latency for latency in latencies if latency.read.name == "first page").rows > 0
    assert all(latency.machine is not None and 0 <= latency.machine.idle_share <= 1 for latency in latencies)
