"""docker-compose.yml run for real: every container healthy, a lead's path through the stack, Prometheus and the
dashboards connected, every service stopping cleanly. Started by `bash deploy/compose/run_test.sh`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pyotp
import pytest
import yaml

from libs.messaging.topology import TOPOLOGY
from tests.deploy.postgres_settings import declared_settings

ROOT = Path(__file__).resolve().parents[2]
RUN_TEST = ROOT / "deploy" / "compose" / "run_test.sh"
SERVICES = ["ingest-gateway", "dlq-service", "distribution-worker", "email-worker", "export-worker", "scheduler"]
ONE_SHOTS = ["migrate", "provision"]
T = TypeVar("T")

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(
        os.environ.get("FMHL_COMPOSE_TEST") != "1",
        reason="builds images and runs the compose stack under Podman: `bash deploy/compose/run_test.sh`",
    ),
]


def eventually(probe: Callable[[], T | None], what: str, within_s: float = 90.0) -> T:
    """Polls until the probe returns something other than None, or fails naming what never happened."""
    deadline = time.monotonic() + within_s
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"within {within_s:g} s: {what}")
        time.sleep(1)


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]

    def url(self, port_variable: str) -> str:
        return f"http://127.0.0.1:{self.env[port_variable]}"

    def compose(self, *arguments: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            ["bash", str(RUN_TEST), "compose", *arguments],
            input=stdin, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"compose {' '.join(arguments)}: {result.stderr[-2000:]}"
        return result.stdout

    def containers(self) -> dict[str, dict[str, Any]]:
        listing = self.compose("ps", "--all", "--format", "json")
        rows = [json.loads(line) for line in listing.splitlines() if line.strip()]
        return {row["Service"]: row for row in rows}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    started = subprocess.run(["bash", str(RUN_TEST), "up"], capture_output=True, text=True, timeout=900, check=False)
    try:
        assert started.returncode == 0, started.stderr[-4000:]
        env_file = Path(started.stdout.strip().splitlines()[-1])
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        yield Stack(env)
    finally:
        # FMHL_COMPOSE_KEEP=1 leaves the stack up to look at (`run_test.sh compose logs`, then `run_test.sh down`).
        if os.environ.get("FMHL_COMPOSE_KEEP") != "1":
            subprocess.run(["bash", str(RUN_TEST), "down"], capture_output=True, timeout=900, check=False)


@dataclass(frozen=True)
class Scenario:
    run: str
    admin: httpx.Client
    dlq: httpx.Client
    good_provider: str
    refused_provider: str
    good_email: str
    refused_email: str


def create_admin(stack: Stack, email: str, password: str) -> str:
    """The first admin, as `stack.sh up` creates it: the admin-cli one-shot (the tables' owner; the gateway's own
    role may not insert users), the password piped to it on standard input."""
    created = stack.compose(
        "run", "--rm", "-T", "admin-cli", "create-user", "--email", email, "--role", "admin", "--password-file", "-",
        stdin=password + "\n",
    )  # fmt: skip
    uri = next(line.split("=", 1)[1] for line in created.splitlines() if line.startswith("otpauth_uri="))
    totp = pyotp.parse_uri(uri)
    assert isinstance(totp, pyotp.TOTP)
    return totp.now()


def inbox(admin: httpx.Client, provider_id: str) -> list[dict[str, Any]]:
    page = admin.get(f"/api/v1/providers/{provider_id}/inbox")
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


@pytest.fixture(scope="module")
def scenario(stack: Stack) -> Iterator[Scenario]:
    """Two providers on one category (one whose mail the sink refuses) and a lead for that category, approved."""
    run = uuid.uuid4().hex[:8]
    email, password = f"admin-{run}@demo.example", f"compose-{run}-password"
    code = create_admin(stack, email, password)
    source = stack.compose("run", "--rm", "-T", "admin-cli", "create-lead-source", "--name", f"forms-{run}")
    api_key = next(line.split("=", 1)[1] for line in source.splitlines() if line.startswith("api_key="))
    gateway = stack.url("FMHL_GATEWAY_PORT")
    login = httpx.post(
        f"{gateway}/api/v1/auth/token", json={"email": email, "password": password, "totp_code": code}, timeout=10
    )
    assert login.status_code == 200, login.text
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    admin = httpx.Client(base_url=gateway, headers=auth, timeout=10)
    dlq = httpx.Client(base_url=stack.url("FMHL_DLQ_PORT"), headers=auth, timeout=10)
    category, emails = (
        f"roofing-{run}",
        {"good": f"good-{run}@demo.example", "refused": f"bounce-{run}@refused.example"},
    )
    providers = {}
    for name, address in emails.items():
        created = admin.post("/api/v1/providers", json={"name": f"{name} {run}", "email": address})
        assert created.status_code == 201, created.text
        providers[name] = created.json()["id"]
        subscription = {"category": category, "zip_codes": ["94107"], "price_cents": 2500}
        assert admin.post(f"/api/v1/providers/{providers[name]}/subscriptions", json=subscription).status_code == 201
        assert admin.post(f"/api/v1/providers/{providers[name]}/top-ups", json={"amount_cents": 10_000}).is_success
    contact = {"name": "Homeowner", "email": "home@example.com", "phone": "+14155550100"}
    lead = {"external_id": f"compose-{run}", "category": category, "zip": "94107", "contact": contact}
    submitted = httpx.post(f"{gateway}/api/v1/leads", json=lead, headers={"X-API-Key": api_key}, timeout=10)
    assert submitted.status_code == 202, submitted.text
    approved = admin.post(f"/api/v1/leads/{submitted.json()['lead_id']}/approve")
    assert approved.status_code == 202, approved.text
    yield Scenario(run, admin, dlq, providers["good"], providers["refused"], emails["good"], emails["refused"])
    admin.close()
    dlq.close()


def test_every_container_is_healthy_after_the_migration_and_the_provisioning(stack: Stack) -> None:
    containers = stack.containers()
    for one_shot in ONE_SHOTS:
        assert (containers[one_shot]["State"], containers[one_shot]["ExitCode"]) == ("exited", 0), one_shot
    long_running = set(containers) - set(ONE_SHOTS)
    assert {*SERVICES, "rabbitmq", "postgres", "smtp-sink", "prometheus", "alertmanager", "grafana"} == long_running
    unhealthy = {name: row["Status"] for name in long_running if (row := containers[name])["Health"] != "healthy"}
    assert not unhealthy


def test_each_service_connects_as_its_own_broker_user_and_database_role(stack: Stack) -> None:
    """Not as the administrators compose.env holds: the users and roles the provision one-shot created."""
    users = {f"fmhl-{service}" for service in SERVICES}
    roles = {f"fmhl_{service.replace('-', '_')}" for service in SERVICES}

    def connected() -> tuple[set[str], set[str]] | None:
        amqp = set(stack.compose("exec", "-T", "rabbitmq", "rabbitmqctl", "-q", "list_connections", "user").split())
        sql = "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = 'fmhl' AND pid <> pg_backend_pid()"
        postgres = set(stack.compose("exec", "-T", "postgres", "psql", "-U", "fmhl", "-d", "fmhl", "-tAc", sql).split())
        return (amqp, postgres) if users <= amqp and roles <= postgres else None

    amqp, postgres = eventually(connected, "a connection from every service's own user and role")
    assert amqp - {"user"} == users
    assert postgres == roles


def test_postgresql_runs_with_the_declared_server_settings(stack: Stack) -> None:
    """docker-compose.yml's command gives the server deploy/postgres/fmhl.conf's settings."""
    declared = declared_settings()
    show = ("exec", "-T", "postgres", "psql", "-U", "fmhl", "-d", "fmhl", "-tAc")
    running = {name: stack.compose(*show, f"SHOW {name}").strip() for name in declared}
    assert running == declared


def test_the_image_creates_the_volume_directories_for_its_user(stack: Stack) -> None:
    """Docker, unlike Podman, gives a new named volume the owner of the image's directory (root where none)."""
    owners = subprocess.run(
        ["bash", str(RUN_TEST), "podman", "run", "--rm", "--entrypoint", "stat", "fmhl-ops:local",
         "-c", "%n %u", "/exports", "/mail"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.split()  # fmt: skip
    user = subprocess.run(
        ["bash", str(RUN_TEST), "podman", "image", "inspect", "--format", "{{.Config.User}}", "fmhl-ops:local"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout.strip()  # fmt: skip
    assert owners == ["/exports", user.split(":")[0], "/mail", user.split(":")[0]]
    assert user.split(":")[0] != "0"


def test_an_approved_lead_is_distributed_to_every_subscribed_provider(scenario: Scenario) -> None:
    def inboxes() -> list[list[dict[str, Any]]] | None:
        pages = [inbox(scenario.admin, provider) for provider in (scenario.good_provider, scenario.refused_provider)]
        return pages if all(pages) else None

    for [assignment] in eventually(inboxes, "the lead in both providers' inboxes"):
        assert assignment["category"] == f"roofing-{scenario.run}"


def test_the_assigned_provider_is_mailed_through_the_smtp_sink(stack: Stack, scenario: Scenario) -> None:
    def mailed() -> dict[str, Any] | None:
        listing = stack.compose("exec", "-T", "smtp-sink", "sh", "-c", "cat /mail/index.jsonl 2>/dev/null || true")
        mails = [json.loads(line) for line in listing.splitlines() if line.strip()]
        return next((mail for mail in mails if scenario.good_email in mail["to"]), None)

    mail = eventually(mailed, f"a mail to {scenario.good_email} in the sink's volume")
    assert mail["subject"]


def test_a_mail_the_sink_refuses_is_dead_lettered(scenario: Scenario) -> None:
    def dead_lettered() -> dict[str, Any] | None:
        listed = scenario.dlq.get("/api/v1/admin/queues/dlq", params={"q": scenario.run, "limit": 20})
        assert listed.status_code == 200, listed.text
        return next(iter(listed.json()["items"]), None)

    entry = eventually(dead_lettered, f"the mail to {scenario.refused_email} in the DLQ")
    assert entry["queue"] == "email"


def test_an_export_written_by_the_worker_is_downloaded_from_the_gateway(scenario: Scenario) -> None:
    today = datetime.now(UTC).date().isoformat()
    request = {"kind": "assignments", "date_from": today, "date_to": today, "provider_id": scenario.good_provider}
    requested = scenario.admin.post("/api/v1/reports/exports", json=request)
    assert requested.status_code == 202, requested.text
    export_id = requested.json()["id"]

    def finished() -> dict[str, Any] | None:
        export: dict[str, Any] = scenario.admin.get(f"/api/v1/reports/exports/{export_id}").json()
        return export if export["status"] in ("ready", "failed") else None

    export = eventually(finished, f"export {export_id} finished")
    assert export["status"] == "ready", export["error"]
    downloaded = scenario.admin.get(f"/api/v1/reports/exports/{export_id}/download")
    assert downloaded.status_code == 200
    assert len(downloaded.text.splitlines()) == 1 + export["row_count"] >= 2


def test_prometheus_scrapes_every_configured_target_and_each_is_up(stack: Stack) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    prometheus = stack.url("FMHL_PROMETHEUS_PORT")

    def all_up() -> dict[str, str] | None:
        targets = httpx.get(f"{prometheus}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        health = {target["labels"]["job"]: target["health"] for target in targets}
        return health if set(health) == jobs and set(health.values()) == {"up"} else None

    assert set(eventually(all_up, f"every target of {sorted(jobs)} up")) == jobs


def test_every_dashboard_query_runs_on_the_stacks_prometheus(stack: Stack) -> None:
    grafana, prometheus = stack.url("FMHL_GRAFANA_PORT"), stack.url("FMHL_PROMETHEUS_PORT")
    uids = [board["uid"] for board in httpx.get(f"{grafana}/api/search", timeout=5).json()]
    assert len(uids) == len(list((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")))
    failures = []
    for uid in uids:
        dashboard = httpx.get(f"{grafana}/api/dashboards/uid/{uid}", timeout=5).json()["dashboard"]
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": target["expr"]}, timeout=10).json()
                if answer["status"] != "success":
                    failures.append(f"{uid} / {panel['title']}: {answer.get('error')}")
    assert not failures


def test_the_demo_drives_the_stack_through_its_published_ports(stack: Stack) -> None:
    """deploy/local/demo.py as `stack.sh demo` runs it, its URLs and the owner's connection from the environment."""
    gateway_env = dict(
        line.split("=", 1)
        for line in (Path(stack.env["FMHL_COMPOSE_ENV_DIR"]) / "ingest-gateway.env").read_text().split()
    )
    port = stack.env["FMHL_POSTGRES_PORT"]
    env = {
        "PATH": os.environ["PATH"],
        "DATABASE_URL": f"postgresql+asyncpg://fmhl:{stack.env['FMHL_DB_PASSWORD']}@127.0.0.1:{port}/fmhl",
        "TOTP_ENCRYPTION_KEY": gateway_env["TOTP_ENCRYPTION_KEY"],
        "INGEST_GATEWAY_URL": stack.url("FMHL_GATEWAY_PORT"),
        "DLQ_SERVICE_URL": stack.url("FMHL_DLQ_PORT"),
        "DISTRIBUTION_WORKER_URL": stack.url("FMHL_DISTRIBUTION_PORT"),
        "EMAIL_WORKER_URL": stack.url("FMHL_EMAIL_PORT"),
    }
    demo = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "local" / "demo.py")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "logged in with password + TOTP" in demo.stdout
    assert "submitted and approved 3 leads" in demo.stdout
    assert "fmhl_leads_approved_total" in demo.stdout


def test_every_service_stops_cleanly_within_its_grace_period(stack: Stack) -> None:
    """Last on purpose: it stops the stack. Exit code 0, not 137, means SIGTERM drained and nothing was killed."""
    stack.compose("stop", *SERVICES)
    containers = stack.containers()
    assert {name: containers[name]["ExitCode"] for name in SERVICES} == dict.fromkeys(SERVICES, 0)


def test_rabbitmq_recreated_finds_its_queues_again(stack: Stack) -> None:
    """After the services stopped: a new container with the same hostname and volume is the same node."""
    stack.compose("rm", "--stop", "--force", "rabbitmq")
    stack.compose("up", "--detach", "--no-deps", "--wait", "rabbitmq")
    queues = stack.compose("exec", "-T", "rabbitmq", "rabbitmqctl", "--quiet", "list_queues", "--vhost", "fmhl", "name")
    assert {queue.name for queue in TOPOLOGY.work_queues} | {TOPOLOGY.dlq_queue} <= set(queues.split())
