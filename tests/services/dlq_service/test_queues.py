"""The queue overview: broker numbers beside the store's counts, for every queue the topology declares."""

from __future__ import annotations

from dlq_service.queue_stats import STATS_PENDING, BrokerNumbers
from dlq_service.queues import StoredCounts, queue_names, queue_state
from libs.messaging.topology import DLQ_QUEUE, PARKING_QUEUE, TOPOLOGY


def test_every_work_queue_is_listed_then_the_dlq_and_its_parking_queue() -> None:
    names = queue_names()
    assert names[:-2] == [queue.name for queue in TOPOLOGY.work_queues]
    assert names[-2:] == [DLQ_QUEUE, PARKING_QUEUE]


def test_a_queue_the_store_has_nothing_for_has_no_failures_and_no_age() -> None:
    state = queue_state("email", BrokerNumbers(depth=3, active=1, consumers=2), None)
    assert (state.name, state.depth, state.active, state.consumers) == ("email", 3, 1, 2)
    assert (state.failed_last_hour, state.dlq_size, state.oldest_unresolved_age_s) == (0, 0, None)


def test_the_stores_counts_and_the_oldest_age_in_tenths_of_a_second() -> None:
    stored = StoredCounts(queue_name="email", failed_last_hour=4, dlq_size=7, oldest_s=12.345)
    state = queue_state("email", BrokerNumbers(depth=0, active=0, consumers=1), stored)
    assert (state.failed_last_hour, state.dlq_size, state.oldest_unresolved_age_s) == (4, 7, 12.3)


def test_a_number_the_broker_could_not_give_stays_unknown_with_the_reason() -> None:
    state = queue_state("email", BrokerNumbers(depth=5, active=None, consumers=1, error=STATS_PENDING), None)
    assert state.active is None
    assert state.error == STATS_PENDING
