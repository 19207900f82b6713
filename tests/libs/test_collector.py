"""The garbage collector once a service has started: startup's objects frozen, young collections less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from libs.runtime.collector import YOUNG_THRESHOLD, tune_for_serving


@pytest.fixture
def collector() -> Iterator[None]:
    """The test process's collector as it was, after the test."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("collector")
async def test_objects_built_before_serving_are_frozen_out_of_full_collections() -> None:
    built_at_startup: list[object] = [object()]
    assert any(tracked is built_at_startup for tracked in gc.get_objects())
    await tune_for_serving()
    assert all(tracked is not built_at_startup for tracked in gc.get_objects())  # the collector no longer walks it


@pytest.mark.usefixtures("collector")
async def test_young_objects_are_collected_less_often_and_the_older_generations_as_before() -> None:
    _, middle, old = gc.get_threshold()
    await tune_for_serving()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
