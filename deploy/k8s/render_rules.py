"""Renders alerts/fmhl.rules.yml as a PrometheusRule for the Prometheus Operator: one source for both.

python deploy/k8s/render_rules.py > deploy/k8s/components/monitoring/prometheusrule.yaml   (task k8s-rules)
"""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def render() -> str:
    rules = yaml.safe_load((ROOT / "alerts" / "fmhl.rules.yml").read_text())
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "fmhl-ops", "labels": {"app.kubernetes.io/part-of": "fmhl-ops"}},
        "spec": {"groups": rules["groups"]},
    }
    return "# Rendered from alerts/fmhl.rules.yml by deploy/k8s/render_rules.py; edit the source, not this.\n" + (
        yaml.safe_dump(resource, sort_keys=False, width=1000)
    )


if __name__ == "__main__":
    print(render(), end="")
