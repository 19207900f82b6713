"""Kubernetes overlays checked offline: what each renders, that it can start (migrations, then each service's own
user and role, then the services; drains, volumes), that monitoring connects to what the alerts and dashboards
expect, and that the operators' objects carry what their documentation requires and agree with the services'
connection settings."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.db.grants import GRANTS, secret_name
from libs.messaging.permissions import secret_variable, users

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BIN = Path(sys.executable).parent
OVERLAYS = ["local", "production"]
SERVICES = ["ingest-gateway", "dlq-service", "distribution-worker", "email-worker", "export-worker", "scheduler"]
CORE_API_VERSIONS = {"v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1"}
PRESTOP_AND_HTTP_DRAIN_S = 5 + 20  # the preStop sleep, then uvicorn's graceful shutdown


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in render(overlay) if doc["kind"] == kind}


def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def settings_of(service: str) -> Any:
    return importlib.import_module(f"{service.replace('-', '_')}.settings").Settings


def expanded(overlay: str, container: dict[str, Any]) -> dict[str, str]:
    """Each literal env value with $(NAME) expanded as the kubelet does: from the ConfigMaps of envFrom and the
    entries before it; a Secret's value stays `<secret/key>`, an unknown reference stays as written."""
    known: dict[str, str] = {}
    for source in container.get("envFrom", []):
        known |= of_kind(overlay, "ConfigMap")[source["configMapRef"]["name"]]["data"]
    for entry in container.get("env", []):
        if "value" in entry:
            known[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: known.get(m.group(1), m.group(0)), entry["value"])
        else:
            reference = entry["valueFrom"]["secretKeyRef"]
            known[entry["name"]] = f"<{reference['name']}/{reference['key']}>"
    return known


def secret_references(workload: dict[str, Any]) -> set[tuple[str, str]]:
    containers = [*pod(workload).get("initContainers", []), *pod(workload)["containers"]]
    return {
        (entry["valueFrom"]["secretKeyRef"]["name"], entry["valueFrom"]["secretKeyRef"]["key"])
        for container in containers
        for entry in container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }


@cache
def k8s_env_files() -> dict[str, dict[str, str]]:
    """The Secrets `stack.sh k8s-env` writes, by name (fmhl-admin, fmhl-<service>), from secrets of the test's own."""
    with tempfile.TemporaryDirectory() as where:
        result = subprocess.run(
            ["bash", str(ROOT / "deploy" / "local" / "stack.sh"), "k8s-env", f"{where}/k8s"],
            env={"PATH": "/usr/bin:/bin", "FMHL_SECRETS_DIR": f"{where}/secrets"},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return {
            f"fmhl-{path.stem}": dict(line.split("=", 1) for line in path.read_text().splitlines())
            for path in Path(where, "k8s").glob("*.env")
        }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_core_objects_of_each_overlay_validate_strictly(overlay: str, tmp_path: Path) -> None:
    core = [doc for doc in render(overlay) if doc["apiVersion"] in CORE_API_VERSIONS]
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(core))
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(rendered)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert {doc["metadata"]["name"] for doc in core if doc["kind"] == "Namespace"} == {
        doc["metadata"]["namespace"] for doc in core if doc["kind"] == "Deployment"
    }


def test_the_local_overlay_needs_no_custom_resource_definitions() -> None:
    assert {doc["apiVersion"] for doc in render("local")} <= CORE_API_VERSIONS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_provision_job_waits_for_the_migration_then_creates_every_user_and_role(overlay: str) -> None:
    jobs = of_kind(overlay, "Job")
    assert set(jobs) == {"fmhl-migrate", "fmhl-provision"}
    [migrate] = pod(jobs["fmhl-migrate"])["containers"]
    [wait] = pod(jobs["fmhl-provision"])["initContainers"]
    [provision] = pod(jobs["fmhl-provision"])["containers"]
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    assert "alembic heads" in wait["command"][-1]
    assert "alembic current" in wait["command"][-1]
    assert expanded(overlay, wait)["DATABASE_URL"] == expanded(overlay, migrate)["DATABASE_URL"]
    assert provision["command"][-1] == "python -m libs.messaging.permissions apply && python -m libs.db.grants apply"
    assert wait["image"] == provision["image"] == migrate["image"]
    # Every password provisioning reads (FMHL_SECRET_<NAME>), from the Secret of the service it belongs to.
    passwords = {
        secret_variable(user.secret): (
            f"fmhl-{user.secret.removeprefix('mq-').removesuffix('-monitoring')}",
            "RABBITMQ_MONITORING_PASSWORD" if user.tags else "RABBITMQ_PASSWORD",
        )
        for user in users()
    } | {secret_variable(secret_name(service)): (f"fmhl-{service}", "DATABASE_PASSWORD") for service in GRANTS}
    env = env_of(provision)
    provided = {
        name: (entry["valueFrom"]["secretKeyRef"]["name"], entry["valueFrom"]["secretKeyRef"]["key"])
        for name, entry in env.items()
        if name.startswith("FMHL_SECRET_")
    }  # fmt: skip
    assert provided == passwords
    for name, key in provided.values():
        assert key in k8s_env_files()[name], (name, key)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_waits_until_its_own_role_holds_what_its_image_declares(overlay: str) -> None:
    """libs.db.grants wait: the tables and columns migrated and the privileges provisioned, for this image."""
    images = {pod(job)["containers"][0]["image"] for job in of_kind(overlay, "Job").values()}
    for name, deployment in of_kind(overlay, "Deployment").items():
        [wait] = pod(deployment)["initContainers"]
        [container] = pod(deployment)["containers"]
        assert wait["command"] == ["python", "-m", "libs.db.grants", "wait", "--service", name]
        assert {wait["image"]} == {container["image"]} == images, name
        assert expanded(overlay, wait)["DATABASE_URL"] == expanded(overlay, container)["DATABASE_URL"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_connects_as_its_own_user_and_role_with_only_its_own_secret(overlay: str) -> None:
    config = of_kind(overlay, "ConfigMap")["fmhl-config"]["data"]
    for name, deployment in of_kind(overlay, "Deployment").items():
        [container] = pod(deployment)["containers"]
        env = expanded(overlay, container)
        role, user = f"fmhl_{name.replace('-', '_')}", f"fmhl-{name}"
        assert env["DATABASE_URL"] == (
            f"postgresql+asyncpg://{role}:<fmhl-{name}/DATABASE_PASSWORD>"
            f"@{config['DATABASE_HOST']}:5432/{config['DATABASE_NAME']}"
        )
        assert env["RABBITMQ_URL"] == (
            f"amqp://{user}:<fmhl-{name}/RABBITMQ_PASSWORD>@{config['RABBITMQ_HOST']}:5672/{config['RABBITMQ_VHOST']}"
        )
        secrets = secret_references(deployment)
        assert {secret for secret, _ in secrets} == {f"fmhl-{name}"}, name
        assert {key for _, key in secrets} <= set(k8s_env_files()[f"fmhl-{name}"]), name
    management = expanded(overlay, pod(of_kind(overlay, "Deployment")["dlq-service"])["containers"][0])
    assert management["RABBITMQ_MANAGEMENT_URL"].startswith("http://fmhl-dlq-service-monitoring:")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_reference_in_an_env_value_resolves(overlay: str) -> None:
    """The kubelet leaves an unknown $(NAME) as written: a URL would carry it to the server as a password."""
    workloads = [*of_kind(overlay, "Deployment").values(), *of_kind(overlay, "Job").values()]
    for workload in workloads:
        for container in [*pod(workload).get("initContainers", []), *pod(workload)["containers"]]:
            unresolved = {name: value for name, value in expanded(overlay, container).items() if "$(" in value}
            assert not unresolved, (workload["metadata"]["name"], container["name"], unresolved)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_leave_the_endpoints_before_sigterm_and_drain_within_the_grace_period(overlay: str) -> None:
    for name, deployment in of_kind(overlay, "Deployment").items():
        [container] = pod(deployment)["containers"]
        assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep", name
        handler_timeout = settings_of(name).model_fields.get("handler_timeout_s")
        drain = PRESTOP_AND_HTTP_DRAIN_S + (handler_timeout.default if handler_timeout else 5)
        assert pod(deployment)["terminationGracePeriodSeconds"] >= drain, name


def test_the_exports_volume_is_single_node_locally_and_shared_in_production() -> None:
    assert of_kind("local", "PersistentVolumeClaim")["fmhl-exports"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert of_kind("production", "PersistentVolumeClaim")["fmhl-exports"]["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_container_sets_only_its_settings_and_every_required_one(overlay: str) -> None:
    config = of_kind(overlay, "ConfigMap")["fmhl-config"]["data"]
    for name, deployment in of_kind(overlay, "Deployment").items():
        [container] = pod(deployment)["containers"]
        fields = settings_of(name).model_fields
        env = env_of(container)
        # Credentials the operators generate are only parts of a URL: $(NAME) inside another value.
        parts = {part for entry in env.values() for part in re.findall(r"\$\((\w+)\)", entry.get("value", ""))}
        assert set(env) - parts <= {field.upper() for field in fields}, name
        required = {field.upper() for field, info in fields.items() if info.is_required()}
        assert required <= set(env) | set(config), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_shared_settings_override_no_default_a_service_tunes_for_itself(overlay: str) -> None:
    # A value in fmhl-config reaches every pod: for a setting whose default differs between the services that read
    # it (PREFETCH: a worker's 10, the dlq-service's two capture batches of 200), it would silently replace one.
    config = of_kind(overlay, "ConfigMap")["fmhl-config"]["data"]
    for variable in config:
        defaults = {
            name: fields[variable.lower()].default
            for name in SERVICES
            if variable.lower() in (fields := settings_of(name).model_fields)
        }
        assert len(set(map(repr, defaults.values()))) <= 1, (variable, defaults)


def test_metrics_are_served_on_an_internal_port_and_the_ingress_routes_only_the_apis() -> None:
    for name, deployment in of_kind("production", "Deployment").items():
        [container] = pod(deployment)["containers"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert env_of(container)["METRICS_PORT"]["value"] == str(ports["metrics"]), name
        assert "metrics" in {port["name"] for port in of_kind("production", "Service")[name]["spec"]["ports"]}
    [monitor] = of_kind("production", "ServiceMonitor")["fmhl-ops"]["spec"]["endpoints"]
    assert monitor["port"] == "metrics"
    [ingress] = of_kind("production", "Ingress").values()
    paths = [path["path"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert paths
    assert all(path.startswith("/api/") for path in paths), paths


def test_scrape_jobs_are_named_as_the_alerts_dashboards_and_compose_prometheus_name_them() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    compose_jobs = {job["job_name"]: job for job in compose["scrape_configs"]}
    monitors = of_kind("production", "ServiceMonitor")
    [endpoint] = monitors["fmhl-ops"]["spec"]["endpoints"]
    [relabel] = endpoint["relabelings"]
    assert relabel["sourceLabels"] == ["__meta_kubernetes_service_name"]
    assert relabel["targetLabel"] == "job"
    jobs = {relabel["replacement"].replace("$1", name) for name in of_kind("production", "Service")}
    assert jobs == set(compose_jobs) - {"rabbitmq"}
    rules = yaml.safe_load((ROOT / "alerts" / "fmhl.rules.yml").read_text())
    [service_down] = [
        rule for group in rules["groups"] for rule in group["rules"] if rule.get("alert") == "ServiceDown"
    ]
    pattern = re.search(r'job=~"([^"]+)"', service_down["expr"])
    assert pattern is not None
    assert all(re.fullmatch(pattern.group(1), job) for job in jobs)
    [rabbit] = monitors["fmhl-rabbitmq"]["spec"]["endpoints"]
    assert rabbit["relabelings"] == [{"targetLabel": "job", "replacement": "rabbitmq"}]
    assert rabbit["path"] == compose_jobs["rabbitmq"]["metrics_path"]
    assert rabbit["params"] == compose_jobs["rabbitmq"]["params"]


def test_monitoring_objects_carry_the_label_kube_prometheus_stack_selects() -> None:
    monitoring = [doc for doc in render("production") if doc["apiVersion"] == "monitoring.coreos.com/v1"]
    assert {doc["kind"] for doc in monitoring} == {"ServiceMonitor", "PrometheusRule"}
    assert all(doc["metadata"]["labels"]["release"] for doc in monitoring)


def test_dashboards_ship_as_sidecar_config_maps_rendered_from_grafana() -> None:
    sys.path.insert(0, str(K8S))
    try:
        from render_dashboards import render as render_dashboards  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    committed = (K8S / "components" / "monitoring" / "dashboards.yaml").read_text()
    assert committed == render_dashboards(), "run `task k8s-rules` after changing deploy/grafana/dashboards/"
    shipped = {
        key: value
        for config_map in of_kind("production", "ConfigMap").values()
        if config_map["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
        for key, value in config_map["data"].items()
    }
    sources = {path.name: path.read_text() for path in (ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")}
    assert shipped == sources


def test_the_rabbitmq_cluster_declares_what_the_cluster_operator_requires() -> None:
    [cluster] = of_kind("production", "RabbitmqCluster").values()
    assert cluster["apiVersion"] == "rabbitmq.com/v1beta1"
    spec = cluster["spec"]
    assert spec["replicas"] == 3  # the operator tests 1, 3 and 5; quorum queues need an odd count
    assert re.fullmatch(r"\d+(Gi|Ti)", spec["persistence"]["storage"])
    assert len(spec["rabbitmq"]["additionalConfig"]) <= 2000  # the CRD's maxLength
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["rabbitmq"]
    assert spec["image"] == compose["image"]
    vhosts = re.findall(r"^default_vhost\s*=\s*(\S+)$", spec["rabbitmq"]["additionalConfig"], re.MULTILINE)
    name = cluster["metadata"]["name"]
    for deployment in of_kind("production", "Deployment").values():
        [container] = pod(deployment)["containers"]
        assert expanded("production", container)["RABBITMQ_URL"].endswith(f"@{name}:5672/{vhosts[0]}")
    # The operator's default user (an administrator) is the provision Job's alone.
    [provision] = pod(of_kind("production", "Job")["fmhl-provision"])["containers"]
    env = expanded("production", provision)
    assert (
        env["RABBITMQ_URL"]
        == f"amqp://<{name}-default-user/username>:<{name}-default-user/password>@{name}:5672/{vhosts[0]}"
    )
    assert env["RABBITMQ_MANAGEMENT_URL"].endswith(f"@{name}:15672")


def test_the_postgres_cluster_declares_what_cloudnativepg_requires() -> None:
    [cluster] = of_kind("production", "Cluster").values()
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert spec["instances"] == 3
    assert re.fullmatch(r"\d+(Gi|Ti)", spec["storage"]["size"])
    initdb = spec["bootstrap"]["initdb"]
    name = cluster["metadata"]["name"]
    containers = [
        container
        for workload in [*of_kind("production", "Deployment").values(), *of_kind("production", "Job").values()]
        for container in [*pod(workload).get("initContainers", []), *pod(workload)["containers"]]
    ]
    for container in containers:
        # The primary, wherever failover moved it.
        url = expanded("production", container)["DATABASE_URL"]
        assert url.endswith(f"@{name}-rw:5432/{initdb['database']}"), container["name"]
    # The migrations as the owner the operator creates; the roles created by its superuser, in the provision Job.
    jobs = of_kind("production", "Job")
    owner = f"<{name}-app/username>:<{name}-app/password>@"
    assert owner in expanded("production", pod(jobs["fmhl-migrate"])["containers"][0])["DATABASE_URL"]
    assert owner in expanded("production", pod(jobs["fmhl-provision"])["initContainers"][0])["DATABASE_URL"]
    superuser = expanded("production", pod(jobs["fmhl-provision"])["containers"][0])["DATABASE_URL"]
    assert f"<{name}-superuser/username>:<{name}-superuser/password>@" in superuser
    assert spec["enableSuperuserAccess"] is True
    readers = {
        workload["metadata"]["name"]
        for workload in [*of_kind("production", "Deployment").values(), *jobs.values()]
        if any(secret == f"{name}-superuser" for secret, _ in secret_references(workload))
    }
    assert readers == {"fmhl-provision"}
