"""Every alert, proven on a real Prometheus and Alertmanager scraping the six services and RabbitMQ.

Prometheus loads a test overlay generated from the rule file it loads in production (alerts/rendered/): the same
expressions, labels and aggregations, with time compressed (`for` and range windows in seconds) and a few
thresholds lowered (the overlay's table says which); a test proves nothing else differs. Each alert is then
driven to firing by a real condition on this module's own services, database and vhost (a stopped service, a
queue with messages and no consumer, dead letters, PostgreSQL refusing them, a held row or table lock, an SMTP
server gone, a job that fails, a planted balance discrepancy) and back to resolved. An alert whose expression
returns nothing on the scraped series never fires, and its scenario fails.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika
import httpx
import pyotp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import col

from ingest_gateway import providers, top_ups
from ingest_gateway.accounts import create_lead_source, create_user
from ingest_gateway.providers import NewProvider, NewSubscription
from libs.auth import TotpSecrets
from libs.db.tables import DeadLetter, DeadLetterStatus, Provider, Resolution
from libs.runtime import SERVICES
from tests.conftest import TEST_TOTP_ENCRYPTION_KEY, ServiceProcess, ServiceProcesses, wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "rendered" / "fmhl.rules.yml"
SMTP_SINK = ROOT / "deploy" / "local" / "smtp_sink.py"

# The overlay: time compressed for every rule, and these thresholds lowered (each must occur once in its
# expression). Everything else in the expressions is the rule file's, as the last tests below prove.
TEST_FOR = "2s"
TEST_WINDOW = "20s"
LOWERED = {
    "QueueBacklogHigh": [("> 100", "> 5")],
    "DLQSizeHigh": [("> 100", "> 3")],
    "BillingFailuresHigh": [("> 1", "> 0.1")],
    "ScheduledJobNotSucceeding": [("> 2 * 300", "> 2 * 5")],
}
RANGE = re.compile(r"\[(\d+[smhdwy])\]")
METRIC = re.compile(r"\b(?:fmhl|rabbitmq)_\w+")
# Numbers and durations outside quoted label values: what the overlay may change.
LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|(?<![\w:.])\d+(?:\.\d+)?(?:[smhdwy]\b)?')

# Every service's settings here: health and gauges refreshed fast enough for seconds-long scenarios.
SETTINGS = {"HEALTH_CHECK_TIMEOUT_S": "1", "DLQ_SIZE_POLL_S": "1"}
SCENARIOS: dict[str, str] = {}


def proves(*alerts: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Registers the scenario as the proof of these alerts, for the test that every alert has one."""

    def register(scenario: Callable[..., Any]) -> Callable[..., Any]:
        for alert in alerts:
            SCENARIOS[alert] = scenario.__name__
        return scenario

    return register


def rule_groups() -> list[dict[str, Any]]:
    return list(yaml.safe_load(RULES.read_text())["groups"])


def alert_rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for group in rule_groups() for rule in group["rules"] if "alert" in rule}


def overlay(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rule groups with `for` and range windows compressed and the LOWERED thresholds replaced."""
    compressed = []
    for group in groups:
        rules = []
        for rule in group["rules"]:
            expression = RANGE.sub(f"[{TEST_WINDOW}]", rule["expr"])
            for original, lowered in LOWERED.get(rule.get("alert", ""), []):
                assert expression.count(original) == 1, (rule["alert"], original)
                expression = expression.replace(original, lowered)
            rules.append({**rule, "expr": expression} | ({"for": TEST_FOR} if "for" in rule else {}))
        compressed.append({**group, "rules": rules})
    return compressed


def shape(expression: str) -> str:
    """The expression with every number and duration outside quotes replaced by `#`, whitespace collapsed."""
    masked = LITERAL.sub(lambda match: match.group(0) if match.group(0).startswith('"') else "#", expression)
    return " ".join(masked.split())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the pure checks of the overlay and the scenario list ---------------------------------------------------------


def test_every_alert_in_the_rule_file_has_a_scenario() -> None:
    missing = sorted(set(alert_rules()) - set(SCENARIOS))
    assert not missing, f"alerts with no end-to-end scenario: {missing}"
    assert set(SCENARIOS) <= set(alert_rules()), set(SCENARIOS) - set(alert_rules())


def test_the_overlay_changes_only_durations_and_thresholds() -> None:
    original = rule_groups()
    compressed = overlay(original)
    assert [group["name"] for group in compressed] == [group["name"] for group in original]
    for group, test_group in zip(original, compressed, strict=True):
        for rule, test_rule in zip(group["rules"], test_group["rules"], strict=True):
            name = rule.get("alert") or rule["record"]
            assert shape(test_rule["expr"]) == shape(rule["expr"]), name
            unchanged = {key: value for key, value in rule.items() if key not in {"expr", "for"}}
            assert {key: value for key, value in test_rule.items() if key not in {"expr", "for"}} == unchanged, name
            assert ("for" in test_rule) == ("for" in rule), name
    lowered = {
        rule["alert"]
        for group, test_group in zip(original, compressed, strict=True)
        for rule, test_rule in zip(group["rules"], test_group["rules"], strict=True)
        if "alert" in rule and RANGE.sub("", rule["expr"]) != RANGE.sub("", test_rule["expr"])
    }
    assert lowered == set(LOWERED)


# --- the stack, Prometheus and Alertmanager ------------------------------------------------------------------------


@dataclass
class SmtpSink:
    folder: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, str(SMTP_SINK), str(self.folder), str(self.port)], stdout=output, stderr=output
            )
        wait_for(self.accepts, 15, "the SMTP sink listening")

    def accepts(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


@dataclass
class Stack:
    processes: ServiceProcesses
    running: dict[str, ServiceProcess] = field(default_factory=dict)

    def start(self, name: str, port: int) -> ServiceProcess:
        self.running[name] = self.processes.start(name, port, **SETTINGS)
        return self.running[name]

    def restart(self, name: str) -> None:
        self.start(name, self.running[name].port).wait_ready(timeout=180)


@pytest.fixture(scope="module")
def smtp_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpSink]:
    folder = tmp_path_factory.mktemp("mail")
    sink = SmtpSink(folder, free_port(), folder / "sink.log")
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def monitored(service_processes: ServiceProcesses, smtp_sink: SmtpSink) -> Stack:
    """The six services on ports the OS picked, mailing through this module's own SMTP sink."""
    service_processes.env = {**service_processes.env, "SMTP_PORT": str(smtp_sink.port)}
    stack = Stack(service_processes)
    for declared in SERVICES:
        stack.start(declared.name, free_port())
    for process in stack.running.values():
        # Six interpreters importing at once on two cores: a loaded machine takes over a minute.
        process.wait_ready(timeout=180)
    return stack


@dataclass(frozen=True)
class Monitoring:
    prometheus: str
    alertmanager: str
    expressions: dict[str, str]
    """Each alert's expression as the overlay has it, to show what it returns when a scenario fails."""


@pytest.fixture(scope="module")
def monitoring(monitored: Stack, rabbitmq_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    folder = tmp_path_factory.mktemp("prometheus")
    prometheus_port, alertmanager_port = free_port(), free_port()
    groups = overlay(rule_groups())
    (folder / "overlay.rules.yml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    (folder / "alertmanager.yml").write_text(yaml.safe_dump({
        "route": {"receiver": "ops", "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "ops"}],
    }))  # fmt: skip
    scrape: list[dict[str, Any]] = [
        {"job_name": f"fmhl-{name}", "static_configs": [{"targets": [f"127.0.0.1:{process.port}"]}]}
        for name, process in monitored.running.items()
    ]
    # The production job's endpoint and families, limited to this module's vhost: the broker is shared.
    scrape.append({
        "job_name": "rabbitmq", "metrics_path": "/metrics/detailed",
        "params": {"family": ["queue_coarse_metrics", "queue_consumer_count"], "vhost": [vhost_of(rabbitmq_url)]},
        "static_configs": [{"targets": ["127.0.0.1:15692"]}],
    })  # fmt: skip
    (folder / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(folder / "overlay.rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": scrape,
    }))  # fmt: skip
    alertmanager_binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    prometheus_binary = shutil.which("prometheus")
    assert alertmanager_binary, "the test command installs prometheus-alertmanager"
    assert prometheus_binary, "the test command installs prometheus"
    processes = [
        subprocess.Popen(
            [alertmanager_binary, f"--config.file={folder / 'alertmanager.yml'}", f"--storage.path={folder / 'am'}",
             f"--web.listen-address=127.0.0.1:{alertmanager_port}", "--cluster.listen-address="],
            stdout=(folder / "alertmanager.log").open("wb"), stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [prometheus_binary, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            stdout=(folder / "prometheus.log").open("wb"), stderr=subprocess.STDOUT,
        ),
    ]  # fmt: skip
    found = Monitoring(
        f"http://127.0.0.1:{prometheus_port}",
        f"http://127.0.0.1:{alertmanager_port}",
        {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"] if "alert" in rule},
    )
    try:
        wait_for(lambda: httpx.get(f"{found.prometheus}/-/ready").status_code == 200, 30, "Prometheus ready")
        wait_for(lambda: httpx.get(f"{found.alertmanager}/-/ready").status_code == 200, 30, "Alertmanager ready")
        yield found
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=20)


def vhost_of(rabbitmq_url: str) -> str:
    return unquote(urlsplit(rabbitmq_url).path.removeprefix("/")) or "/"


# --- what the scenarios share ----------------------------------------------------------------------------------------


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """As `wait_for`, without blocking the event loop (a scenario may hold a lock in it meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def query(monitoring: Monitoring, expression: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{monitoring.prometheus}/api/v1/query", params={"query": expression}).json()
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def active(monitoring: Monitoring, name: str, **labels: str) -> list[dict[str, Any]]:
    alerts = httpx.get(f"{monitoring.prometheus}/api/v1/alerts").json()["data"]["alerts"]
    return [
        alert
        for alert in alerts
        if alert["labels"]["alertname"] == name and all(alert["labels"].get(k) == v for k, v in labels.items())
    ]


def targets(monitoring: Monitoring) -> list[dict[str, Any]]:
    return list(httpx.get(f"{monitoring.prometheus}/api/v1/targets").json()["data"]["activeTargets"])


def firing(monitoring: Monitoring, name: str, **labels: str) -> bool:
    return any(alert["state"] == "firing" for alert in active(monitoring, name, **labels))


async def fires(monitoring: Monitoring, name: str, timeout: float = 60, **labels: str) -> dict[str, Any]:
    try:
        await until(lambda: firing(monitoring, name, **labels), timeout, f"{name} {labels} firing")
    except AssertionError as error:
        expression = monitoring.expressions[name]
        returned = query(monitoring, expression)
        # What the expression is made of, so a failure says which part was missing or out of range.
        parts = {series: query(monitoring, series) for series in sorted(set(METRIC.findall(expression)))}
        health = {target["labels"]["job"]: target["health"] for target in targets(monitoring)}
        raise AssertionError(
            f"{error}; its expression returns {returned or 'nothing'}; its series: {parts}; targets: {health}"
        ) from None
    return next(alert for alert in active(monitoring, name, **labels) if alert["state"] == "firing")


async def resolves(monitoring: Monitoring, name: str, timeout: float = 90, **labels: str) -> None:
    await until(lambda: not active(monitoring, name, **labels), timeout, f"{name} {labels} resolved")


def in_alertmanager(monitoring: Monitoring, name: str) -> bool:
    alerts = httpx.get(f"{monitoring.alertmanager}/api/v2/alerts").json()
    return any(alert["labels"]["alertname"] == name and alert["status"]["state"] == "active" for alert in alerts)


@dataclass(frozen=True)
class World:
    """This module's own provider (the only subscriber of its category), lead source, and an admin's token."""

    provider_id: uuid.UUID
    category: str
    api_key: str
    provider_login: dict[str, str]
    admin_token: str


@pytest.fixture(scope="module")
def world(monitored: Stack, database_url: str) -> World:
    name = uuid.uuid4().hex[:10]
    password = f"prometheus-{uuid.uuid4().hex}"

    async def seed() -> tuple[uuid.UUID, str, str, str, str]:
        engine = create_async_engine(database_url)
        actor = uuid.uuid4()
        provider_id = await providers.create(
            engine, NewProvider(name=f"prometheus {name}", email=f"p.{name}@prometheus.example"), actor
        )
        category = f"prometheus-{name}"
        await providers.subscribe(
            engine, provider_id, NewSubscription(category=category, zip_codes=["94107"], price_cents=100), actor
        )
        await top_ups.add(engine, provider_id, 10_000_000, actor)
        _, api_key = await create_lead_source(engine, f"prometheus {name}", trusted=True)
        totp = TotpSecrets.from_keys(TEST_TOTP_ENCRYPTION_KEY)
        admin_email, provider_email = f"admin.{name}@prometheus.example", f"inbox.{name}@prometheus.example"
        _, secret = await create_user(engine, admin_email, "admin", password, None, True, totp=totp)
        await create_user(engine, provider_email, "provider", password, provider_id, False, totp=totp)
        await engine.dispose()
        assert secret is not None
        return provider_id, category, api_key, admin_email, secret

    provider_id, category, api_key, admin_email, secret = asyncio.run(seed())
    login = {"email": admin_email, "password": password, "totp_code": pyotp.TOTP(secret).now()}
    # The password hash is deliberately slow, the more so on a loaded machine.
    response = httpx.post(monitored.running["ingest-gateway"].url("/api/v1/auth/token"), json=login, timeout=60)
    assert response.status_code == 200, response.text
    provider_login = {"email": f"inbox.{name}@prometheus.example", "password": password}
    return World(provider_id, category, api_key, provider_login, str(response.json()["access_token"]))


async def submit_leads(gateway: ServiceProcess, world: World, count: int) -> None:
    """Leads from the trusted source in the module's category: approved at once, distributed to its provider."""

    async def submit(client: httpx.AsyncClient, index: int) -> None:
        key = f"prom-{uuid.uuid4().hex}"
        body = {"external_id": key, "category": world.category, "zip": "94107",
                "contact": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+1 415 5550100"}}  # fmt: skip
        response = await client.post(
            "/api/v1/leads", json=body, headers={"X-API-Key": world.api_key, "Idempotency-Key": key}
        )
        assert response.status_code == 202, response.text

    async with httpx.AsyncClient(base_url=gateway.url(""), timeout=30) as client:
        await asyncio.gather(*(submit(client, index) for index in range(count)))


async def publish(rabbitmq_url: str, routing_key: str, bodies: list[bytes]) -> None:
    connection = await aio_pika.connect(rabbitmq_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange("fmhl.events")
    for body in bodies:
        await exchange.publish(
            aio_pika.Message(body, type=routing_key, message_id=f"prom-{uuid.uuid4().hex}", delivery_mode=2),
            routing_key=routing_key, mandatory=True,
        )  # fmt: skip
    await connection.close()


@asynccontextmanager
async def holding(engine: AsyncEngine, *statements: Any) -> Any:
    """Runs `statements` in a transaction kept open (with the locks they took) until the block ends."""
    async with engine.connect() as connection, connection.begin():
        for statement in statements:
            await connection.execute(statement)
        yield connection


@asynccontextmanager
async def database(database_url: str) -> Any:
    engine = create_async_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def resolve_all_dead_letters(engine: AsyncEngine) -> None:
    """Every unresolved entry in the test database, so only this scenario's dead letters count."""
    async with engine.begin() as connection:
        await connection.execute(
            update(DeadLetter)
            .where(col(DeadLetter.status) != DeadLetterStatus.resolved)
            .values(
                status=DeadLetterStatus.resolved, resolved=True, resolved_at=func.now(), resolution=Resolution.manual
            )
        )


def lock_balance(provider_id: uuid.UUID) -> Any:
    """The provider's row, as a charge updates it: distributions to it wait, then fail with lock_timeout (5 s)."""
    return select(col(Provider.id)).where(col(Provider.id) == provider_id).with_for_update()


# LOCK TABLE and triggers have no SQLAlchemy expression: SQL that names the models' tables.
LOCK_ASSIGNMENTS = text("LOCK TABLE assignments IN ACCESS EXCLUSIVE MODE")
LOCK_SUBSCRIPTIONS = text("LOCK TABLE subscriptions IN ACCESS EXCLUSIVE MODE")
REFUSE_DEAD_LETTERS = [
    text(
        "CREATE OR REPLACE FUNCTION prometheus_e2e_refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'refused by the Prometheus end-to-end test'; END $$"
    ),
    text(
        "CREATE TRIGGER prometheus_e2e_refuse BEFORE INSERT ON dead_letter_queue "
        "FOR EACH ROW EXECUTE FUNCTION prometheus_e2e_refuse()"
    ),
]
PARKED = "sum(fmhl_dead_letters_parked_total) or vector(0)"
ACCEPT_DEAD_LETTERS = [
    text("DROP TRIGGER IF EXISTS prometheus_e2e_refuse ON dead_letter_queue"),
    text("DROP FUNCTION IF EXISTS prometheus_e2e_refuse()"),
]


async def execute(engine: AsyncEngine, statements: list[Any]) -> None:
    async with engine.begin() as connection:
        for statement in statements:
            await connection.execute(statement)


async def run_job(scheduler: ServiceProcess, world: World, job: str) -> None:
    """Asks for a run, waiting out a run already queued or running (409: its own schedule may have just claimed
    a slot), so the run this test asks for is one that starts after the test's own condition is in place."""
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            response = await client.post(
                scheduler.url(f"/api/v1/admin/jobs/{job}/run"),
                headers={"Authorization": f"Bearer {world.admin_token}"},
            )
            if response.status_code != 409 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    assert response.status_code == 202, response.text


def value_of(monitoring: Monitoring, expression: str) -> float:
    result = query(monitoring, expression)
    return sum(float(sample["value"][1]) for sample in result)


# --- the scenarios ---------------------------------------------------------------------------------------------------


def test_every_service_and_rabbitmq_is_scraped_and_up(monitoring: Monitoring, monitored: Stack) -> None:
    wait_for(
        lambda: len(targets(monitoring)) == 7 and all(t["health"] == "up" for t in targets(monitoring)), 30,
        "all targets up",
    )  # fmt: skip
    scraped = {target["labels"]["job"] for target in targets(monitoring)}
    assert scraped == {f"fmhl-{name}" for name in monitored.running} | {"rabbitmq"}


@proves("ServiceDown", "QueueWithoutConsumers")
async def test_a_stopped_worker_is_down_and_its_queue_has_no_consumer_until_it_returns(
    monitoring: Monitoring, monitored: Stack, rabbitmq_url: str
) -> None:
    export_worker = monitored.running["export-worker"]
    await resolves(monitoring, "QueueWithoutConsumers", queue="report-export")
    export_worker.stop()
    # A request no one is there to take (malformed: the worker refuses it once it is back).
    await publish(rabbitmq_url, "report.export", [b'{"export_id": "not-a-uuid"}'])

    down = await fires(monitoring, "ServiceDown", job="fmhl-export-worker")
    orphaned = await fires(monitoring, "QueueWithoutConsumers", queue="report-export")
    assert down["labels"]["instance"] == f"127.0.0.1:{export_worker.port}"
    assert orphaned["labels"]["vhost"] == vhost_of(rabbitmq_url)
    assert down["annotations"]["runbook_url"].endswith("#servicedown")

    monitored.restart("export-worker")
    await resolves(monitoring, "ServiceDown", job="fmhl-export-worker")
    await resolves(monitoring, "QueueWithoutConsumers", queue="report-export")


@proves("DLQSizeHigh", "DeadLettersArrivingFast")
async def test_dead_letters_arriving_fire_into_alertmanager_and_resolving_them_clears_the_size_alert(
    monitoring: Monitoring, rabbitmq_url: str, database_url: str
) -> None:
    async with database(database_url) as engine:
        await resolve_all_dead_letters(engine)
        await resolves(monitoring, "DLQSizeHigh")
        await resolves(monitoring, "DeadLettersArrivingFast", queue="distribution")
        # Real failures: the distribution-worker refuses each, the dlq-service records it; spread over a few
        # seconds, so the rate sees them arrive after its series exists.
        for _ in range(4):
            await publish(rabbitmq_url, "lead.approved", [b'{"lead_id": "not-a-uuid"}'] * 2)
            await asyncio.sleep(1)

        size = await fires(monitoring, "DLQSizeHigh", queue="distribution")
        await fires(monitoring, "DeadLettersArrivingFast", queue="distribution")
        assert size["labels"] == {"alertname": "DLQSizeHigh", "queue": "distribution", "severity": "critical"}
        await until(lambda: in_alertmanager(monitoring, "DLQSizeHigh"), 30, "DLQSizeHigh in Alertmanager")

        await resolve_all_dead_letters(engine)
    await resolves(monitoring, "DLQSizeHigh")
    await resolves(monitoring, "DeadLettersArrivingFast", queue="distribution")


@proves("DeadLettersParked")
async def test_dead_letters_postgresql_refuses_are_parked_until_sent_back(
    monitoring: Monitoring, monitored: Stack, world: World, rabbitmq_url: str, database_url: str
) -> None:
    dlq_service = monitored.running["dlq-service"]
    async with database(database_url) as engine:
        await resolves(monitoring, "DeadLettersParked")
        await execute(engine, REFUSE_DEAD_LETTERS)
        try:
            # One at a time: the counter's first sample is no increase, the second one is.
            await park_one(monitoring, rabbitmq_url)
            await park_one(monitoring, rabbitmq_url)
            await fires(monitoring, "DeadLettersParked")
        finally:
            await execute(engine, ACCEPT_DEAD_LETTERS)
        async with httpx.AsyncClient(timeout=30) as client:
            headers = {"Authorization": f"Bearer {world.admin_token}"}
            response = await client.post(
                dlq_service.url("/api/v1/admin/queues/dlq/parked/recapture"), json={"limit": 100}, headers=headers
            )
            assert response.status_code == 202, response.text
            await until(
                lambda: (
                    httpx.get(dlq_service.url("/api/v1/admin/queues/dlq/parked"), headers=headers).json()["depth"] == 0
                ),
                30,
                "dlq.parking empty",
            )
        await resolves(monitoring, "DeadLettersParked")
        await resolve_all_dead_letters(engine)


async def park_one(monitoring: Monitoring, rabbitmq_url: str) -> None:
    """A dead letter the refusing database makes the dlq-service park, once the counter says so."""
    before = value_of(monitoring, PARKED)
    await publish(rabbitmq_url, "lead.approved", [b'{"lead_id": "not-a-uuid"}'])
    await until(lambda: value_of(monitoring, PARKED) > before, 60, "a dead letter parked")


def test_the_dlq_service_reports_the_depth_of_the_parking_queue(monitoring: Monitoring, monitored: Stack) -> None:
    """After the parking scenario, minutes after the dlq-service started: its 10 s reads have reported by now."""
    assert query(monitoring, 'fmhl_queue_depth{queue="dlq.parking"}'), "no fmhl_queue_depth for dlq.parking"


@proves("DistributionDurationHigh", "DistributionLatencyBudgetBurnFast", "DistributionLatencyBudgetBurnSlow")
async def test_distributions_held_up_by_a_lock_on_the_balance_are_slow_until_it_is_released(
    monitoring: Monitoring, monitored: Stack, world: World, database_url: str
) -> None:
    names = ["DistributionDurationHigh", "DistributionLatencyBudgetBurnFast", "DistributionLatencyBudgetBurnSlow"]
    for name in names:
        await resolves(monitoring, name)
    async with database(database_url) as engine:
        # Each round: the charges wait about 2.5 s on the provider's row (under the 5 s lock_timeout), then pass.
        for _ in range(3):
            async with holding(engine, lock_balance(world.provider_id)):
                await submit_leads(monitored.running["ingest-gateway"], world, 4)
                await asyncio.sleep(2.5)
    for name in names:
        await fires(monitoring, name)
    for name in names:
        await resolves(monitoring, name)


@proves("InboxQuerySlow")
async def test_inbox_queries_waiting_on_a_table_lock_are_slow_until_it_is_released(
    monitoring: Monitoring, monitored: Stack, world: World, database_url: str
) -> None:
    gateway = monitored.running["ingest-gateway"]
    async with httpx.AsyncClient(base_url=gateway.url(""), timeout=60) as client:
        login = await client.post("/api/v1/auth/token", json=world.provider_login)
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        inbox = f"/api/v1/providers/{world.provider_id}/inbox"
        assert (await client.get(inbox, headers=headers)).status_code == 200
        await resolves(monitoring, "InboxQuerySlow")

        async with database(database_url) as engine:
            for _ in range(3):
                async with holding(engine, LOCK_ASSIGNMENTS):
                    requests = [asyncio.create_task(client.get(inbox, headers=headers)) for _ in range(3)]
                    await asyncio.sleep(1.5)
                assert all(response.status_code == 200 for response in await asyncio.gather(*requests))
        await fires(monitoring, "InboxQuerySlow")
    await resolves(monitoring, "InboxQuerySlow")


@proves("QueueBacklogHigh", "BillingFailuresHigh")
async def test_charges_failing_on_a_held_balance_lock_back_up_the_queue_until_it_is_released(
    monitoring: Monitoring, monitored: Stack, world: World, database_url: str
) -> None:
    await resolves(monitoring, "QueueBacklogHigh", queue="distribution")
    await resolves(monitoring, "BillingFailuresHigh")
    async with database(database_url) as engine, holding(engine, lock_balance(world.provider_id)):
        await submit_leads(monitored.running["ingest-gateway"], world, 40)
        await fires(monitoring, "QueueBacklogHigh", queue="distribution")
        await fires(monitoring, "BillingFailuresHigh")
    await resolves(monitoring, "QueueBacklogHigh", queue="distribution")
    await resolves(monitoring, "BillingFailuresHigh")


@proves("WorkerPausedTooLong")
async def test_an_email_worker_whose_smtp_server_is_gone_pauses_and_resumes_when_it_returns(
    monitoring: Monitoring, smtp_sink: SmtpSink, rabbitmq_url: str
) -> None:
    await resolves(monitoring, "WorkerPausedTooLong", queue="email")
    smtp_sink.stop()
    try:
        mail = b'{"template": "new_lead", "to": "paused@prometheus.example", "params": {}}'
        await publish(rabbitmq_url, "email.send", [mail] * 3)
        paused = await fires(monitoring, "WorkerPausedTooLong", queue="email")
        assert paused["labels"]["job"] == "fmhl-email-worker"
    finally:
        smtp_sink.start()
    await resolves(monitoring, "WorkerPausedTooLong", queue="email")


@proves("ScheduledJobNotSucceeding")
async def test_a_job_that_keeps_failing_fires_until_it_succeeds_again(
    monitoring: Monitoring, monitored: Stack, world: World, database_url: str
) -> None:
    scheduler = monitored.running["scheduler"]
    job = "subscription-reactivation"
    recent = f'time() - fmhl_scheduled_job_last_success_timestamp_seconds{{scheduled_job="{job}"}} < 10'
    failed = f'sum(fmhl_scheduled_job_runs_total{{scheduled_job="{job}", status="failed"}}) or vector(0)'
    await run_job(scheduler, world, job)
    await until(lambda: bool(query(monitoring, recent)), 60, f"a recent success of {job}")
    await resolves(monitoring, "ScheduledJobNotSucceeding", scheduled_job=job)
    failures_before = value_of(monitoring, failed)
    async with database(database_url) as engine, holding(engine, LOCK_SUBSCRIPTIONS):
        await run_job(scheduler, world, job)
        await until(lambda: value_of(monitoring, failed) > failures_before, 60, "a failed run")
        await fires(monitoring, "ScheduledJobNotSucceeding", scheduled_job=job)
    # The consumer policy retries the failed run with backoff; it now succeeds.
    await resolves(monitoring, "ScheduledJobNotSucceeding", scheduled_job=job)


@proves("BalanceDiscrepanciesFound")
async def test_a_planted_balance_discrepancy_is_found_by_reconciliation(
    monitoring: Monitoring, monitored: Stack, world: World, database_url: str
) -> None:
    scheduler = monitored.running["scheduler"]
    runs = 'sum(fmhl_scheduled_job_runs_total{scheduled_job="balance-reconciliation", status="succeeded"}) or vector(0)'
    planted = col(Provider.id) == world.provider_id

    async def reconcile() -> None:
        before = value_of(monitoring, runs)
        await run_job(scheduler, world, "balance-reconciliation")
        await until(lambda: value_of(monitoring, runs) > before, 60, "a balance-reconciliation run")

    # The counter's series exists before the discrepancy (a first sample is no increase), whatever it counts.
    await reconcile()
    await resolves(monitoring, "BalanceDiscrepanciesFound")
    async with database(database_url) as engine:
        async with engine.begin() as connection:
            await connection.execute(
                update(Provider).where(planted).values(balance_cents=col(Provider.balance_cents) + 1)
            )
        try:
            await reconcile()
            await fires(monitoring, "BalanceDiscrepanciesFound")
        finally:
            async with engine.begin() as connection:
                await connection.execute(
                    update(Provider).where(planted).values(balance_cents=col(Provider.balance_cents) - 1)
                )
    await resolves(monitoring, "BalanceDiscrepanciesFound")


# --- labels Prometheus reserves --------------------------------------------------------------------------------------

RESERVED = re.compile(r"^(job|instance|__.*)$")


def test_no_exported_series_carries_a_label_prometheus_reserves(monitoring: Monitoring, monitored: Stack) -> None:
    """Last in the module: every scenario has made its counters and gauges appear by then."""
    offending = []
    for name, process in monitored.running.items():
        for family in text_string_to_metric_families(httpx.get(process.url("/metrics")).text):
            for sample in family.samples:
                offending += [f"{name}: {sample.name}{{{label}}}" for label in sample.labels if RESERVED.match(label)]
    assert not offending, offending
    # What a scrape made of them: a clash would show as exported_job / exported_instance.
    assert not query(monitoring, '{__name__=~".+", exported_job!=""} or {__name__=~".+", exported_instance!=""}')
