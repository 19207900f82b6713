"""The code holds to the project's rules: ruff clean, formatted, mypy strict, and no service imports another."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVICE_PACKAGES = {
    "ingest_gateway", "dlq_service", "distribution_worker", "email_worker", "export_worker", "scheduler",
}  # fmt: skip


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "libs", "services", "tests", "deploy", "bench"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_tool_passes(command: list[str]) -> None:
    result = subprocess.run(
        [str(BIN / command[0]), *command[1:]], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def test_libs_never_import_services() -> None:
    for path in (ROOT / "libs").rglob("*.py"):
        assert not imported_packages(path) & SERVICE_PACKAGES, path


def test_services_never_import_each_other() -> None:
    for service_dir in (ROOT / "services").iterdir():
        for path in service_dir.rglob("*.py"):
            own = path.relative_to(service_dir).parts[0]
            assert not imported_packages(path) & (SERVICE_PACKAGES - {own}), path


def test_every_service_has_the_same_file_roles() -> None:
    for service_dir in (ROOT / "services").iterdir():
        [package] = [p for p in service_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))]
        files = {p.name for p in package.glob("*.py")}
        assert {"__main__.py", "main.py", "settings.py", "metrics.py"} <= files, service_dir.name
