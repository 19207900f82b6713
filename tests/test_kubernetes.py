"""Kubernetes manifests, checked offline: each overlay builds with kustomize and validates against the API
schemas; every service has its probes and graceful stop; workers scale on their queue; the PrometheusRule is
the rendering of alerts/ (one source)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.messaging.topology import TOPOLOGY
from libs.runtime import SERVICES as DECLARED

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVICES = {service.name for service in DECLARED}


def build(overlay: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def of_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


@pytest.mark.parametrize("overlay", ["local", "production"])
def test_overlay_builds_and_validates_against_the_kubernetes_schemas(overlay: str, tmp_path: Path) -> None:
    documents = build(overlay)
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(documents))
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(rendered)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(of_kind(documents, "Deployment")) == SERVICES
    assert set(of_kind(documents, "Service")) == SERVICES
    assert set(of_kind(documents, "PodDisruptionBudget")) == SERVICES


def test_every_deployment_has_probes_resources_and_a_graceful_stop() -> None:
    for name, deployment in of_kind(build("production"), "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/health/live", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready", name
        assert container["startupProbe"]["httpGet"]["path"] == "/health/live", name
        assert {"requests", "limits"} <= container["resources"].keys(), name
        assert pod["terminationGracePeriodSeconds"] >= 30, name
        assert container["securityContext"]["runAsNonRoot"] is True, name
        assert container["command"][-1] == name.replace("-", "_"), name
        assert deployment["metadata"]["namespace"] == "fmhl-ops"


def test_workers_scale_on_their_own_queue_and_the_scheduler_runs_replicated() -> None:
    documents = build("production")
    scaled = {
        name: doc["spec"]["triggers"][0]["metadata"]["queueName"]
        for name, doc in of_kind(documents, "ScaledObject").items()
    }
    assert scaled == {"distribution-worker": "distribution", "email-worker": "email", "export-worker": "report-export"}
    assert set(scaled.values()) <= {queue.name for queue in TOPOLOGY.work_queues}
    assert of_kind(documents, "Deployment")["scheduler"]["spec"]["replicas"] == 2


def test_the_prometheus_rule_is_the_rendering_of_alerts() -> None:
    sys.path.insert(0, str(ROOT / "deploy" / "k8s"))
    try:
        from render_rules import render  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    committed = (ROOT / "deploy" / "k8s" / "components" / "monitoring" / "prometheusrule.yaml").read_text()
    assert committed == render(), "run `task k8s-rules` after changing alerts/"
    rule = of_kind(build("production"), "PrometheusRule")["fmhl-ops"]
    # The same rendering compose's Prometheus and promtool load: the source with each alert's runbook link.
    rendered = yaml.safe_load((ROOT / "alerts" / "rendered" / "fmhl.rules.yml").read_text())
    assert rule["spec"]["groups"] == rendered["groups"]
