"""The memory report still works: a benchmark's service and a service started idle are each read as they stop,
and the table names them with figures. No size is asserted here (`task bench` is where figures are taken)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bench.distribution import Distribution
from bench.harness import GENERATED_SECRETS, BenchEnv
from bench.throughput import memory_table, read_idle

pytestmark = [pytest.mark.broker, pytest.mark.database, pytest.mark.stack]
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def bench_env(database_url: str, rabbitmq_url: str, service_env: dict[str, str], tmp_path: Path) -> BenchEnv:
    settings = {**{name: make() for name, make in GENERATED_SECRETS.items()}, **service_env}
    return BenchEnv(database_url, rabbitmq_url, settings, log_dir=tmp_path, fresh_tables=False)


async def test_each_service_is_read_as_it_stops_and_the_table_names_it(bench_env: BenchEnv) -> None:
    await Distribution(leads=10, port=free_port()).measure(ROOT, bench_env)
    await read_idle(ROOT, bench_env, ["scheduler"], first_port=free_port())

    readings = bench_env.memory.by_service()
    assert set(readings) == {"distribution-worker", "scheduler"}
    for reading in (*readings["distribution-worker"], *readings["scheduler"]):
        assert 0 < reading.rss_mb <= reading.peak_mb
    rows = [line for line in memory_table(bench_env.memory) if line.startswith("| distribution-worker")]
    assert len(rows) == 1
    assert rows[0].split("|")[4].strip() == "1"
