"""The code holds to the project's rules: ruff clean, formatted, mypy strict, no service imports another, and no
SQL is built from strings."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from libs.runtime import SERVICES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVICE_PACKAGES = {service.package for service in SERVICES}


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "."],
        ["ruff", "format", "--check", "."],
        ["mypy", "libs", "services", "tests", "deploy", "bench", "docs"],
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


def test_the_services_folder_holds_exactly_the_declared_services() -> None:
    folders = {path.relative_to(ROOT).as_posix() for path in (ROOT / "services").iterdir() if path.is_dir()}
    assert folders == {service.folder for service in SERVICES}


def test_every_service_has_the_same_file_roles() -> None:
    for service in SERVICES:
        files = {path.name for path in (ROOT / service.folder / service.package).glob("*.py")}
        assert {"__main__.py", "main.py", "settings.py", "metrics.py"} <= files, service.name


def test_no_string_built_sql_is_waved_through() -> None:
    """`noqa: S608` silenced ruff's warning about SQL built from strings; queries are expressions on the models."""
    waved = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("libs", "services")
        for path in (ROOT / folder).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"noqa:[^#\n]*\bS608\b", line)
    ]
    assert waved == []
