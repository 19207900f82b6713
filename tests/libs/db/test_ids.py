"""Row ids of the growing tables: time-ordered (UUIDv7), so new rows go to the right edge of their indexes."""

from __future__ import annotations

import time

from libs.db.ids import time_ordered_uuid


def test_an_id_made_later_sorts_after_in_postgresqls_byte_order() -> None:
    earlier = [time_ordered_uuid() for _ in range(100)]
    time.sleep(0.002)
    later = time_ordered_uuid()
    assert later.bytes > max(earlier).bytes


def test_ids_are_rfc_9562_version_7_and_unique() -> None:
    made = [time_ordered_uuid() for _ in range(10_000)]
    assert {made_id.version for made_id in made} == {7}
    assert {made_id.variant for made_id in made} == {"specified in RFC 4122"}
    assert len(set(made)) == len(made)
