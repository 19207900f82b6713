"""The alert rules on a real Prometheus and Alertmanager, scraping the six services and RabbitMQ.

Evaluation and `for` are shortened by a test-only configuration; the project's rule file is loaded unchanged,
and DLQSizeHigh's test twin is derived from it with only the threshold and duration replaced.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import yaml
from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import col

from libs.db.tables import DeadLetter, DeadLetterStatus, Resolution
from tests.conftest import ServiceProcess, wait_for

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = "http://127.0.0.1:19090"
ALERTMANAGER = "http://127.0.0.1:19093"
TEST_THRESHOLD = 3


def dlq_size_twin() -> dict[str, Any]:
    rules = yaml.safe_load((ROOT / "alerts" / "fmhl.rules.yml").read_text())
    original = next(rule for group in rules["groups"] for rule in group["rules"] if rule.get("alert") == "DLQSizeHigh")
    assert original["expr"].endswith("> 100")
    twin = dict(original, alert="DLQSizeHighTestTwin", expr=original["expr"].replace("> 100", f"> {TEST_THRESHOLD}"))
    twin["for"] = "2s"
    return {"groups": [{"name": "test-twins", "rules": [twin]}]}


@pytest.fixture(scope="module")
def prometheus(stack: list[ServiceProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    folder = tmp_path_factory.mktemp("prometheus")
    (folder / "twins.yml").write_text(yaml.safe_dump(dlq_size_twin()))
    (folder / "alertmanager.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "ops", "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "ops"}],
    }))  # fmt: skip
    scrape: list[dict[str, Any]] = [
        {"job_name": f"fmhl-{service.name}", "static_configs": [{"targets": [f"127.0.0.1:{service.port}"]}]}
        for service in stack
    ]
    scrape.append({
        "job_name": "rabbitmq", "metrics_path": "/metrics/detailed",
        "params": {"family": ["queue_coarse_metrics", "queue_consumer_count"]},
        "static_configs": [{"targets": ["127.0.0.1:15692"]}],
    })  # fmt: skip
    (folder / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "alerts" / "fmhl.rules.yml"), str(folder / "twins.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": ["127.0.0.1:19093"]}]}]},
        "scrape_configs": scrape,
    }))  # fmt: skip
    alertmanager_binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    prometheus_binary = shutil.which("prometheus")
    assert alertmanager_binary, "the test command installs prometheus-alertmanager"
    assert prometheus_binary, "the test command installs prometheus"
    processes = [
        subprocess.Popen(
            [alertmanager_binary, f"--config.file={folder / 'alertmanager.yml'}", f"--storage.path={folder / 'am'}",
             "--web.listen-address=127.0.0.1:19093", "--cluster.listen-address="],
            stdout=(folder / "alertmanager.log").open("wb"), stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [prometheus_binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'tsdb'}",
             "--web.listen-address=127.0.0.1:19090"],
            stdout=(folder / "prometheus.log").open("wb"), stderr=subprocess.STDOUT,
        ),
    ]  # fmt: skip
    try:
        wait_for(lambda: httpx.get(f"{PROMETHEUS}/-/ready").status_code == 200, 30, "Prometheus ready")
        wait_for(lambda: httpx.get(f"{ALERTMANAGER}/-/ready").status_code == 200, 30, "Alertmanager ready")
        yield
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)


def targets() -> list[dict[str, Any]]:
    return list(httpx.get(f"{PROMETHEUS}/api/v1/targets").json()["data"]["activeTargets"])


def query(expression: str) -> Any:
    return httpx.get(f"{PROMETHEUS}/api/v1/query", params={"query": expression}).json()["data"]["result"]


def alert_states(name: str) -> list[str]:
    alerts = httpx.get(f"{PROMETHEUS}/api/v1/alerts").json()["data"]["alerts"]
    return [alert["state"] for alert in alerts if alert["labels"]["alertname"] == name]


def in_alertmanager(name: str) -> bool:
    alerts = httpx.get(f"{ALERTMANAGER}/api/v2/alerts").json()
    return any(alert["labels"]["alertname"] == name and alert["status"]["state"] == "active" for alert in alerts)


def test_every_target_is_up(prometheus: None, stack: list[ServiceProcess]) -> None:
    wait_for(lambda: len(targets()) == 7 and all(t["health"] == "up" for t in targets()), 30, "all targets up")
    jobs = {target["labels"]["job"] for target in targets()}
    assert jobs == {f"fmhl-{service.name}" for service in stack} | {"rabbitmq"}


def test_real_failures_fire_the_dlq_alert_into_alertmanager_and_resolving_clears_it(
    prometheus: None, service_env: dict[str, str], database_url: str
) -> None:
    asyncio.run(_resolve_all(database_url))
    wait_for(lambda: alert_states("DLQSizeHighTestTwin") == [], 30, "no DLQ alert before the failures")
    asyncio.run(_malformed_leads(service_env["RABBITMQ_URL"], TEST_THRESHOLD + 2))

    try:
        wait_for(lambda: alert_states("DLQSizeHighTestTwin") == ["firing"], 60, "DLQSizeHighTestTwin firing")
    except AssertionError as error:
        raise AssertionError(f"{error}; fmhl_dlq_size = {query('fmhl_dlq_size')}") from None
    wait_for(lambda: in_alertmanager("DLQSizeHighTestTwin"), 30, "the alert in Alertmanager")
    alert = next(a for a in httpx.get(f"{PROMETHEUS}/api/v1/alerts").json()["data"]["alerts"]
                 if a["labels"]["alertname"] == "DLQSizeHighTestTwin")  # fmt: skip
    assert alert["labels"] == {"alertname": "DLQSizeHighTestTwin", "queue": "distribution", "severity": "critical"}
    assert alert["annotations"]["runbook_url"] == "docs/runbooks.md#dlqsizehigh"

    asyncio.run(_resolve_all(database_url))
    wait_for(lambda: alert_states("DLQSizeHighTestTwin") == [], 60, "the alert cleared")


async def _resolve_all(database_url: str) -> None:
    """Every unresolved entry in the test database, so only this test's failures count."""
    engine = create_async_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(
            update(DeadLetter)
            .where(col(DeadLetter.status) != DeadLetterStatus.resolved)
            .values(
                status=DeadLetterStatus.resolved, resolved=True, resolved_at=func.now(), resolution=Resolution.manual
            )
        )
    await engine.dispose()


async def _malformed_leads(rabbitmq_url: str, count: int) -> None:
    """Real failures: the distribution-worker process refuses each, the dlq-service process records it."""
    connection = await aio_pika.connect(rabbitmq_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange("fmhl.events")
    for index in range(count):
        await exchange.publish(
            aio_pika.Message(b'{"lead_id": "not-a-uuid"}', type="lead.approved",
                             message_id=f"prom-{time.time_ns()}-{index}", delivery_mode=2),
            routing_key="lead.approved", mandatory=True,
        )  # fmt: skip
    await connection.close()
