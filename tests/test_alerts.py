"""Alert rules: valid for promtool, each firing and quiet when it should, thresholds equal to the settings, each
linked to its runbook section by an absolute URL built from RUNBOOK_BASE_URL."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from libs.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "alerts" / "fmhl.rules.yml"
RENDERED = ROOT / "alerts" / "rendered" / "fmhl.rules.yml"
RENDERER = ROOT / "deploy" / "k8s" / "render_rules.py"
PROMTOOL = shutil.which("promtool")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is missing: the test command installs Debian's prometheus package"
    return subprocess.run([PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def alerts(path: Path = RULES) -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def render(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RENDERER), *args], env={**os.environ, **environment},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_source_and_its_rendering_pass_promtool_check() -> None:
    for path in (RULES, RENDERED):
        result = promtool("check", "rules", str(path))
        assert result.returncode == 0, result.stdout + result.stderr


def test_compose_prometheus_loads_the_rendering_where_compose_mounts_it(tmp_path: Path) -> None:
    """docker-compose.yml mounts prometheus.yml at /etc/prometheus/ and alerts/ at /etc/prometheus/alerts."""
    shutil.copy(ROOT / "deploy" / "prometheus" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copytree(ROOT / "alerts", tmp_path / "alerts")
    result = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{tmp_path}/alerts/rendered/fmhl.rules.yml" in result.stdout


def test_the_committed_rendering_is_the_source_with_the_default_runbook_base() -> None:
    result = render("rules", RUNBOOK_BASE_URL="https://fmhl.example.com/docs/runbooks.md")
    assert result.returncode == 0, result.stderr
    assert result.stdout == RENDERED.read_text(), "run `task k8s-rules` after changing alerts/fmhl.rules.yml"


def test_runbook_links_are_built_from_the_configured_base() -> None:
    result = render("rules", RUNBOOK_BASE_URL="https://wiki.internal.test/ops/fmhl-runbooks/")
    assert result.returncode == 0, result.stderr
    rules = [rule for group in yaml.safe_load(result.stdout)["groups"] for rule in group["rules"]]
    links = {rule["alert"]: rule["annotations"]["runbook_url"] for rule in rules if "alert" in rule}
    assert links == {name: f"https://wiki.internal.test/ops/fmhl-runbooks#{name.lower()}" for name in alerts()}


def test_a_runbook_base_that_is_not_an_absolute_url_is_refused() -> None:
    result = render("rules", RUNBOOK_BASE_URL="docs/runbooks.md")
    assert result.returncode != 0
    assert "RUNBOOK_BASE_URL" in result.stderr


def test_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "alerts/tests/fmhl.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_description_and_an_absolute_link_to_its_runbook_section() -> None:
    runbook = (ROOT / "docs" / "runbooks.md").read_text()
    headings = {line.removeprefix("## ").strip() for line in runbook.splitlines() if line.startswith("## ")}
    tests = (ROOT / "alerts" / "tests" / "fmhl.rules.test.yml").read_text()
    rendered = alerts(RENDERED)
    assert set(rendered) == set(alerts())
    for name, rule in rendered.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "ticket"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), name
        assert name in headings, f"docs/runbooks.md has no section `## {name}`"
        assert re.fullmatch(rf"https?://[^\s#]+#{name.lower()}", annotations["runbook_url"]), name
        assert f"alertname: {name}" in tests, f"{name} has no promtool test"


def test_thresholds_equal_the_settings_defaults() -> None:
    defaults = ServiceSettings.model_fields
    expected = {
        "QueueBacklogHigh": defaults["queue_depth_alert_threshold"].default,
        "DLQSizeHigh": defaults["dlq_size_alert_threshold"].default,
        "DistributionDurationHigh": defaults["distribution_duration_p95_threshold_ms"].default,
        "InboxQuerySlow": defaults["inbox_query_p95_threshold_ms"].default,
    }
    rules = alerts()
    for name, threshold in expected.items():
        match = re.search(r">\s*([0-9.]+)\s*$", str(rules[name]["expr"]).strip())
        assert match, name
        assert float(match.group(1)) == threshold, name


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_must_not() -> None:
    cases = yaml.safe_load((ROOT / "alerts" / "tests" / "fmhl.rules.test.yml").read_text())["tests"]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == set(alerts()), set(alerts()) - fires
    assert quiet == set(alerts()), set(alerts()) - quiet
