"""docs/contracts/render.py, imported as the tests' one way to the rendering (it is a script, not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_renderer() -> ModuleType:
    if "contracts_render" in sys.modules:
        return sys.modules["contracts_render"]
    spec = importlib.util.spec_from_file_location("contracts_render", ROOT / "docs" / "contracts" / "render.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module
