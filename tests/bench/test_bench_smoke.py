"""The throughput benchmarks still work: each runs at a tiny size against this checkout's services on the real
broker and database and yields a figure beside its baseline. Speed is never asserted here (`task bench` is where
figures are taken)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.distribution import Distribution
from bench.dlq_capture import DlqCapture
from bench.harness import GENERATED_SECRETS, BenchEnv
from bench.ingest import Ingest

pytestmark = [pytest.mark.broker, pytest.mark.database, pytest.mark.stack]
ROOT = Path(__file__).resolve().parents[2]


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
    assert {"p50_ms", "p99_ms", "baseline_p99_ms"} <= set(measurement.details)


async def test_distribution_benchmark_times_every_lead_it_queued(bench_env: BenchEnv) -> None:
    measurement = await Distribution(leads=20, port=18553).measure(ROOT, bench_env)
    assert measurement.count == 20
    assert measurement.value > 0
    assert measurement.baseline > 0


async def test_dlq_capture_benchmark_times_every_dead_letter_it_queued(bench_env: BenchEnv) -> None:
    measurement = await DlqCapture(letters=30, port=18554).measure(ROOT, bench_env)
    assert measurement.count == 30
    assert measurement.value > 0
    assert measurement.baseline > 0
