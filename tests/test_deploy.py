"""Deployment files hold together: compose against the Compose specification and the code, Prometheus and
Alertmanager configs against their own tools, dashboards against the metrics the code exposes."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.runtime import SERVICES, Service
from tests.deploy.postgres_settings import SERVER_SETTINGS, declared_settings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
FMHL_SERVICES = {service.name: service.package for service in SERVICES}


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_compose_file_follows_the_compose_specification() -> None:
    result = run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


ONE_SHOTS = {"migrate", "provision", "admin-cli"}
"""Run to completion (or by hand); the only services that see the administrators' passwords."""


def conditions(service: dict[str, Any]) -> dict[str, str]:
    return {dependency: spec["condition"] for dependency, spec in service["depends_on"].items()}


def env_file_lines(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="module")
def compose_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The env files `stack.sh up` gives docker-compose.yml, generated from secrets of the test's own."""
    where = tmp_path_factory.mktemp("compose")
    result = subprocess.run(
        ["bash", str(ROOT / "deploy" / "local" / "stack.sh"), "compose-env", str(where / "env")],
        env={"PATH": "/usr/bin:/bin", "FMHL_SECRETS_DIR": str(where / "secrets")},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return where / "env"


def test_compose_has_the_whole_stack_with_healthchecks() -> None:
    services = COMPOSE["services"]
    expected = {
        *FMHL_SERVICES,
        *ONE_SHOTS,
        "rabbitmq",
        "postgres",
        "smtp-sink",
        "prometheus",
        "alertmanager",
        "grafana",
    }
    assert expected == services.keys()
    for name, service in services.items():
        if name not in ONE_SHOTS:
            assert "test" in service.get("healthcheck", {}), f"{name} has no healthcheck"


def test_services_start_after_the_migration_and_the_provisioning_of_their_users() -> None:
    services = COMPOSE["services"]
    assert conditions(services["migrate"]) == {"postgres": "service_healthy"}
    assert conditions(services["provision"]) == {
        "rabbitmq": "service_healthy",
        "migrate": "service_completed_successfully",
    }
    for name in FMHL_SERVICES:
        assert conditions(services[name])["provision"] == "service_completed_successfully", name
        assert conditions(services[name])["postgres"] == conditions(services[name])["rabbitmq"] == "service_healthy"


def test_only_the_one_shots_and_the_engines_see_the_administrators_passwords() -> None:
    for name, service in COMPOSE["services"].items():
        text = json.dumps(service)
        if name not in {*ONE_SHOTS, "postgres", "rabbitmq"}:
            assert "FMHL_DB_PASSWORD" not in text, name
            assert "FMHL_MQ_PASSWORD" not in text, name


def test_the_provision_env_file_holds_every_password_provisioning_reads(compose_env: Path) -> None:
    from libs.db.grants import GRANTS, secret_name
    from libs.messaging.permissions import secret_variable, users

    expected = {secret_variable(user.secret) for user in users()} | {secret_variable(secret_name(s)) for s in GRANTS}
    provided = env_file_lines(compose_env / "provision.env")
    assert set(provided) == expected
    assert all(provided.values())
    assert COMPOSE["services"]["provision"]["env_file"] == ["${FMHL_COMPOSE_ENV_DIR:-.run/compose}/provision.env"]


@pytest.mark.parametrize("name", FMHL_SERVICES)
def test_each_compose_service_runs_its_module_as_its_own_user_with_only_real_settings(
    name: str, compose_env: Path
) -> None:
    module = FMHL_SERVICES[name]
    service = COMPOSE["services"][name]
    assert service["command"] == ["python", "-m", module]
    assert (ROOT / "services" / name / module / "__main__.py").exists()
    settings = importlib.import_module(f"{module}.settings").Settings
    fields = {field.upper() for field in settings.model_fields}
    assert service["env_file"] == [f"${{FMHL_COMPOSE_ENV_DIR:-.run/compose}}/{name}.env"]
    own = env_file_lines(compose_env / f"{name}.env")
    environment: dict[str, Any] = {**service["environment"], **own}
    assert set(environment) <= fields, set(environment) - fields
    required = {field.upper() for field, info in settings.model_fields.items() if info.is_required()}
    assert required <= set(environment), required - set(environment)
    assert environment["HTTP_PORT"] == "8080"
    assert any(port.endswith(":8080") for port in service["ports"])
    assert own["DATABASE_URL"].startswith(f"postgresql+asyncpg://fmhl_{module}:")
    assert own["DATABASE_URL"].endswith("@postgres:5432/fmhl")
    assert own["RABBITMQ_URL"].startswith(f"amqp://fmhl-{name}:")
    assert own["RABBITMQ_URL"].endswith("@rabbitmq:5672/fmhl")


def test_prometheus_scrapes_every_service_on_its_compose_port_and_passes_promtool(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target for job in config["scrape_configs"] for static in job["static_configs"] for target in static["targets"]
    }
    assert {f"{name}:8080" for name in FMHL_SERVICES} | {"rabbitmq:15692"} == targets
    shutil.copy(ROOT / "deploy" / "prometheus" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copytree(ROOT / "alerts", tmp_path / "alerts")
    result = run("promtool", "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_config_routes_by_severity_and_passes_amtool() -> None:
    path = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
    result = run("amtool", "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    routes = yaml.safe_load(path.read_text())["route"]["routes"]
    assert {route["matchers"][0] for route in routes} == {
        'severity="critical"',
        'severity="warning"',
        'severity="ticket"',
    }


def defined_metric_names() -> set[str]:
    names: set[str] = set()
    for path in [*(ROOT / "libs").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
        names.update(re.findall(r'"(fmhl_[a-z_]+)"', path.read_text()))
    return names


def test_dashboards_use_only_metrics_the_code_exposes_and_rules_that_exist() -> None:
    metrics = defined_metric_names()
    rules = yaml.safe_load((ROOT / "alerts" / "fmhl.rules.yml").read_text())
    records = {rule["record"] for group in rules["groups"] for rule in group["rules"] if "record" in rule}
    uids = set()
    for path in (ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        uids.add(dashboard["uid"])
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                for name in re.findall(r"\b(fmhl_[a-z_]+?)(?:_bucket|_count|_sum)?\b(?![a-z_])", target["expr"]):
                    assert name in metrics, f"{path.name}: {panel['title']} uses unknown {name}"
                for record in re.findall(r"\bfmhl:[a-z_0-9:]+", target["expr"]):
                    assert record in records, f"{path.name}: unknown recording rule {record}"
    assert len(uids) == 3


def test_the_readme_documents_every_metric_the_code_exposes() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = sorted(name for name in defined_metric_names() if name not in readme)
    assert not missing, missing


def bash_array(script: str, name: str) -> list[str]:
    match = re.search(rf"^{name}=\((.*?)\)", script, re.MULTILINE | re.DOTALL)
    assert match, f"stack.sh has no {name}=(...)"
    return match.group(1).split()


def bash_map(script: str, name: str) -> dict[str, str]:
    match = re.search(rf"^declare -A {name}=\((.*?)\)", script, re.MULTILINE | re.DOTALL)
    assert match, f"stack.sh has no declare -A {name}=(...)"
    return dict(re.findall(r"\[([a-z-]+)\]=(\S+)", match.group(1)))


def test_the_local_stack_starts_the_declared_services_on_their_ports() -> None:
    script = (ROOT / "deploy" / "local" / "stack.sh").read_text()
    assert bash_array(script, "SERVICES") == [service.name for service in SERVICES]
    assert bash_map(script, "PORTS") == {service.name: str(service.port) for service in SERVICES}
    assert bash_map(script, "MODULES") == FMHL_SERVICES


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.name)
def test_each_service_settings_default_to_its_declared_name_and_port(service: Service) -> None:
    fields = importlib.import_module(f"{service.package}.settings").Settings.model_fields
    assert fields["service_name"].default == service.name
    assert fields["http_port"].default == service.port


def test_the_image_and_the_tools_find_every_declared_package() -> None:
    folders = [f"/app/{service.folder}" for service in SERVICES]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    match = re.search(r"PYTHONPATH=(\S+)", dockerfile)
    assert match
    assert match.group(1).split(":") == ["/app", *folders]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    first_party = pyproject["tool"]["ruff"]["lint"]["isort"]["known-first-party"]
    assert set(first_party) == {"libs", *FMHL_SERVICES.values()}
    mypy_path = set(pyproject["tool"]["mypy"]["mypy_path"].split(":"))
    assert mypy_path == {"$MYPY_CONFIG_FILE_DIR", *(f"$MYPY_CONFIG_FILE_DIR/{s.folder}" for s in SERVICES)}


def test_every_deployment_runs_postgresql_with_the_declared_server_settings() -> None:
    declared = declared_settings()
    assert set(declared) == set(SERVER_SETTINGS)
    command = COMPOSE["services"]["postgres"]["command"]
    assert command[0] == "postgres"
    assert command[1::2] == ["-c"] * (len(command) // 2)
    assert dict(flag.split("=", 1) for flag in command[2::2]) == declared
    cluster = yaml.safe_load((ROOT / "deploy" / "k8s" / "overlays" / "production" / "postgres.yaml").read_text())
    parameters = cluster["spec"]["postgresql"]["parameters"]
    assert {name: parameters[name] for name in declared} == declared


async def test_the_local_postgresql_runs_with_the_declared_server_settings(engine: AsyncEngine) -> None:
    """stack.sh put deploy/postgres/fmhl.conf in the cluster it started (and restarted it to take it)."""
    declared = declared_settings()
    async with engine.connect() as connection:
        running = {name: await connection.scalar(text(f"SHOW {name}")) for name in declared}
    assert running == declared
