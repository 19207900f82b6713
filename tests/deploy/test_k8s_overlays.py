"""Kubernetes overlays checked offline: what each renders, that it can start (migrations first, drains, volumes),
that monitoring connects to what the alerts and dashboards expect, and that the operators' objects carry what
their documentation requires and agree with the services' connection settings."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

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
def test_every_deployment_waits_for_the_migration_job(overlay: str) -> None:
    [job] = of_kind(overlay, "Job").values()
    [migrate] = pod(job)["containers"]
    assert migrate["command"] == ["alembic", "upgrade", "head"]
    for name, deployment in of_kind(overlay, "Deployment").items():
        [wait] = pod(deployment)["initContainers"]
        [container] = pod(deployment)["containers"]
        assert "alembic current" in wait["command"][-1], name
        assert "alembic heads" in wait["command"][-1], name
        assert wait["image"] == container["image"] == migrate["image"], name
        assert env_of(wait)["DATABASE_URL"] == env_of(container)["DATABASE_URL"] == env_of(migrate)["DATABASE_URL"]


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
        env = env_of(container)
        assert env["RABBITMQ_URL"]["value"].endswith(f"@{name}:5672/{vhosts[0]}")
        assert env["RABBITMQ_USER"]["valueFrom"]["secretKeyRef"] == {"name": f"{name}-default-user", "key": "username"}


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
        env = env_of(container)
        # The primary, wherever failover moved it; the owner's credentials from the Secret the operator writes.
        assert env["DATABASE_URL"]["value"].endswith(f"@{name}-rw:5432/{initdb['database']}"), container["name"]
        assert env["DATABASE_USER"]["valueFrom"]["secretKeyRef"] == {"name": f"{name}-app", "key": "username"}
