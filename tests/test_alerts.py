"""Alert rules: valid for promtool, each firing and quiet when it should, thresholds equal to the settings."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from libs.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "alerts" / "fmhl.rules.yml"
PROMTOOL = shutil.which("promtool")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is missing: the test command installs Debian's prometheus package"
    return subprocess.run([PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "alerts/tests/fmhl.rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_severity_summary_description_and_a_runbook_section() -> None:
    runbook = (ROOT / "docs" / "runbooks.md").read_text()
    tests = (ROOT / "alerts" / "tests" / "fmhl.rules.test.yml").read_text()
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in {"critical", "warning", "ticket"}, name
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= annotations.keys(), name
        assert f"## {name}" in runbook, name
        assert annotations["runbook_url"] == f"docs/runbooks.md#{name.lower()}", name
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
