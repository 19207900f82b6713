"""Which entries each kind of resolution may resolve."""

from __future__ import annotations

import pytest

from dlq_service.resolutions import RESOLVABLE
from libs.db.tables import DeadLetterStatus, Resolution


@pytest.mark.parametrize("status", [DeadLetterStatus.failed, DeadLetterStatus.retrying])
def test_an_admin_may_resolve_an_entry_that_is_not_resolved_yet(status: DeadLetterStatus) -> None:
    assert status in RESOLVABLE[Resolution.manual]


def test_a_successful_retry_resolves_only_an_entry_still_being_retried() -> None:
    # An entry that failed again meanwhile, or that an admin resolved, keeps its state.
    assert RESOLVABLE[Resolution.retry_succeeded] == (DeadLetterStatus.retrying,)


@pytest.mark.parametrize("resolution", list(Resolution))
def test_nothing_resolves_an_entry_twice(resolution: Resolution) -> None:
    assert DeadLetterStatus.resolved not in RESOLVABLE[resolution]
