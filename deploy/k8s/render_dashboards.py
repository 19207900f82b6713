"""Renders deploy/grafana/dashboards/*.json as ConfigMaps for Grafana's dashboard sidecar: one source for both.

python deploy/k8s/render_dashboards.py > deploy/k8s/components/monitoring/dashboards.yaml   (task k8s-rules)
"""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
# kube-prometheus-stack's Grafana sidecar loads ConfigMaps carrying this label (its chart default).
SIDECAR_LABEL = {"grafana_dashboard": "1"}


class _Block(str):
    """Dumped as a literal block, so the rendered file diffs line by line with its dashboard."""


yaml.SafeDumper.add_representer(
    _Block, lambda dumper, text: dumper.represent_scalar("tag:yaml.org,2002:str", text, "|")
)


def render() -> str:
    config_maps = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"fmhl-dashboard-{path.stem.removeprefix('fmhl-')}",
                "labels": {**SIDECAR_LABEL, "app.kubernetes.io/part-of": "fmhl-ops"},
                # The sidecar's folderAnnotation, where the chart sets one; ignored otherwise.
                "annotations": {"grafana_folder": "fmhl-ops"},
            },
            "data": {path.name: _Block(path.read_text())},
        }
        for path in sorted(DASHBOARDS.glob("*.json"))
    ]
    header = (
        "# Rendered from deploy/grafana/dashboards/ by deploy/k8s/render_dashboards.py; edit the source, not this.\n"
    )
    return header + "".join("---\n" + yaml.safe_dump(doc, sort_keys=False, width=1000) for doc in config_maps)


if __name__ == "__main__":
    print(render(), end="")
