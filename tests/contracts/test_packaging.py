"""`pip install -e .` works from a fresh clone: every lib and service package then imports from that clone."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from libs.runtime import SERVICES
from tests.contracts.render import ROOT


def fresh_clone(destination: Path) -> Path:
    """What a clone has of the packages and their packaging: the work tree's tracked and new files (nothing git
    ignores: no .venv, no caches) under libs/ and services/, and pyproject.toml."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "pyproject.toml", "libs",
         "services"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def test_an_editable_install_imports_every_package_from_the_clone(tmp_path: Path) -> None:
    clone = fresh_clone(tmp_path / "clone")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "-e", str(clone)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    # The dependencies (not the packages) come from this interpreter's environment: --no-deps installed none.
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(purelib, "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    modules = ["libs.settings", "libs.db.tables", "libs.runtime", *(f"{service.package}.main" for service in SERVICES)]
    probe = "import importlib, sys\nfor name in sys.argv[1:]: print(importlib.import_module(name).__file__)"
    imported = subprocess.run([str(python), "-c", probe, *modules], cwd=tmp_path, capture_output=True, text=True)

    assert imported.returncode == 0, imported.stderr[-3000:]
    assert all(Path(line).is_relative_to(clone) for line in imported.stdout.splitlines()), imported.stdout
    assert len(imported.stdout.splitlines()) == len(modules)
