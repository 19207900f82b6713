"""The committed contracts (AsyncAPI, OpenAPI, .env.example) are what the code generates now."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.contracts.render import ROOT, load_renderer


@pytest.fixture(scope="module")
def renderer() -> ModuleType:
    return load_renderer()


@pytest.fixture(scope="module")
def rendered(renderer: ModuleType) -> dict[Path, str]:
    files: dict[Path, str] = renderer.rendered()
    return files


def test_every_committed_document_is_what_the_code_generates(rendered: dict[Path, str]) -> None:
    stale = [str(path.relative_to(ROOT)) for path, content in rendered.items()
             if not path.exists() or path.read_text() != content]  # fmt: skip
    assert stale == [], "run `task contracts` and commit what it wrote"


def test_no_committed_document_is_left_over_from_a_removed_service(rendered: dict[Path, str]) -> None:
    committed = {path for path in (ROOT / "docs" / "contracts").rglob("*.yaml")}
    assert committed == {path for path in rendered if path.suffix == ".yaml"}


def test_there_is_an_asyncapi_document_per_service_and_an_openapi_document_per_api(rendered: dict[Path, str]) -> None:
    names = {f"{path.parent.name}/{path.name}" for path in rendered if path.suffix == ".yaml"}
    services = ["ingest-gateway", "dlq-service", "distribution-worker", "email-worker", "export-worker", "scheduler"]
    apis = ["ingest-gateway", "dlq-service", "scheduler"]
    assert names == {f"asyncapi/{name}.yaml" for name in services} | {f"openapi/{name}.yaml" for name in apis}
