"""Renders alerts/fmhl.rules.yml, the one source of the alerts, for every Prometheus that loads them.

Each alert gets its `runbook_url`: RUNBOOK_BASE_URL (where docs/runbooks.md is served, e.g. your repository's
view of it or your wiki's copy) followed by `#<alert name in lower case>`, the heading's anchor.

python deploy/k8s/render_rules.py rules > alerts/rendered/fmhl.rules.yml      (compose's Prometheus, promtool)
python deploy/k8s/render_rules.py prometheusrule > deploy/k8s/components/monitoring/prometheusrule.yaml
(both: `task k8s-rules`; `RUNBOOK_BASE_URL=https://... task k8s-rules` for your own base)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "alerts" / "fmhl.rules.yml"
RENDERED = ROOT / "alerts" / "rendered" / "fmhl.rules.yml"
# The production overlay's example host (deploy/k8s/overlays/production/ingress.yaml): set your own.
DEFAULT_RUNBOOK_BASE_URL = "https://fmhl.example.com/docs/runbooks.md"


def runbook_base_url() -> str:
    base = os.environ.get("RUNBOOK_BASE_URL", DEFAULT_RUNBOOK_BASE_URL)
    if not base.startswith(("https://", "http://")):
        sys.exit(f"RUNBOOK_BASE_URL must be an absolute http(s) URL, got {base!r}")
    return base.rstrip("/")


def runbook_url(base: str, alert: str) -> str:
    return f"{base}#{alert.lower()}"


def groups(base: str) -> list[dict[str, Any]]:
    """The source's groups, each alert's annotations ending with its runbook link."""
    source = yaml.safe_load(SOURCE.read_text())["groups"]
    for group in source:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["annotations"]["runbook_url"] = runbook_url(base, rule["alert"])
    return list(source)


def rule_file(base: str) -> str:
    header = (
        "# Rendered from alerts/fmhl.rules.yml by deploy/k8s/render_rules.py with RUNBOOK_BASE_URL; "
        "edit the source, not this.\n"
    )
    return header + yaml.safe_dump({"groups": groups(base)}, sort_keys=False, width=1000)


def prometheus_rule(base: str) -> str:
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "fmhl-ops", "labels": {"app.kubernetes.io/part-of": "fmhl-ops"}},
        "spec": {"groups": groups(base)},
    }
    return "# Rendered from alerts/fmhl.rules.yml by deploy/k8s/render_rules.py; edit the source, not this.\n" + (
        yaml.safe_dump(resource, sort_keys=False, width=1000)
    )


def render() -> str:
    """The PrometheusRule with the default base, as committed."""
    return prometheus_rule(DEFAULT_RUNBOOK_BASE_URL)


RENDERERS = {"rules": rule_file, "prometheusrule": prometheus_rule}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in RENDERERS:
        sys.exit(f"usage: render_rules.py {{{'|'.join(RENDERERS)}}}")
    print(RENDERERS[sys.argv[1]](runbook_base_url()), end="")
