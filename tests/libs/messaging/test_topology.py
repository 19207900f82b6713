"""The topology as data: every work queue dead-letters at-least-once and retries through delay queues."""

import pytest

from libs.contracts import ALL_MESSAGES
from libs.messaging.topology import DEAD_LETTER_EXCHANGE, DLQ_QUEUE, TOPOLOGY, WorkQueue


@pytest.mark.parametrize("queue", TOPOLOGY.work_queues, ids=lambda q: q.name)
def test_work_queues_dead_letter_at_least_once(queue: WorkQueue) -> None:
    arguments = queue.arguments()
    assert arguments["x-queue-type"] == "quorum"
    assert arguments["x-dead-letter-exchange"] == DEAD_LETTER_EXCHANGE
    assert arguments["x-dead-letter-strategy"] == "at-least-once"
    # Without reject-publish RabbitMQ silently downgrades dead-lettering to at-most-once.
    assert arguments["x-overflow"] == "reject-publish"
    assert arguments["x-delivery-limit"] >= 1


@pytest.mark.parametrize("queue", TOPOLOGY.work_queues, ids=lambda q: q.name)
def test_delay_queues_wait_longer_each_attempt_and_return_to_their_queue(queue: WorkQueue) -> None:
    ttls = [queue.delay_arguments(attempt)["x-message-ttl"] for attempt in range(1, queue.max_attempts)]
    assert ttls == sorted(ttls)
    assert len(set(ttls)) == len(ttls)
    for attempt in range(1, queue.max_attempts):
        arguments = queue.delay_arguments(attempt)
        assert arguments["x-dead-letter-exchange"] == ""
        assert arguments["x-dead-letter-routing-key"] == queue.name
        assert arguments["x-overflow"] == "reject-publish"


def test_the_plan_queues_exist() -> None:
    assert [queue.name for queue in TOPOLOGY.work_queues] == [
        "distribution",
        "email",
        "report-export",
        "dlq-outcomes",
        "scheduled-jobs",
    ]
    assert TOPOLOGY.dlq_queue == DLQ_QUEUE
    assert "x-dead-letter-exchange" not in TOPOLOGY.dlq_arguments


def test_every_message_type_lands_in_exactly_one_work_queue() -> None:
    for message in ALL_MESSAGES:
        owners = [queue.name for queue in TOPOLOGY.work_queues if message.routing_key() in queue.routing_keys]
        assert len(owners) == 1, (message.message_type, owners)
        assert TOPOLOGY.queue_for(message.routing_key()) == owners[0]
