"""The broker topology as data: exchanges, work queues, their bindings, retry delays and dead-letter wiring.

Every service declares all of it at start (declaration is idempotent), so the order in which services
start never matters. Changing a queue's arguments makes RabbitMQ refuse the redeclaration
(PRECONDITION_FAILED): such a change needs a new queue name or a policy, never an in-place edit here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EVENTS_EXCHANGE = "fmhl.events"
"""Topic exchange for domain events and commands; routing key = message type (`lead.approved`)."""

DEAD_LETTER_EXCHANGE = "fmhl.dlx"
"""Fanout exchange: the broker's dead letters and the consumer policy's final failures all reach `dlq`."""

DLQ_QUEUE = "dlq"
PARKING_QUEUE = "dlq.parking"
"""Dead letters the dlq-service could not record after bounded attempts, with the error: kept, never looped."""


@dataclass(frozen=True)
class WorkQueue:
    name: str
    routing_keys: tuple[str, ...]
    retry_delays_ms: tuple[int, ...] = (1_000, 5_000, 30_000)
    """One delay queue per attempt: attempt n waits retry_delays_ms[n-1], then returns to this queue."""
    delivery_limit: int = 5
    """Crash-loop backstop: a message whose consumer dies on it is dead-lettered after limit + 1 deliveries."""
    exchange: str = EVENTS_EXCHANGE

    @property
    def max_attempts(self) -> int:
        return len(self.retry_delays_ms) + 1

    def delay_queue(self, attempt: int) -> str:
        return f"{self.name}.retry.{attempt}"

    def delay_attempt(self, queue_name: str) -> int | None:
        """The attempt whose delay queue this is, or None when it is not one of this queue's delay queues."""
        for attempt in range(1, self.max_attempts):
            if queue_name == self.delay_queue(attempt):
                return attempt
        return None

    @property
    def redelivery(self) -> tuple[str, str]:
        """Exchange and routing key that reach this queue and no other: the default exchange routes by queue
        name, as the delay queues send messages back. A retry from the DLQ goes this way, whatever the message
        says about where it came from."""
        return "", self.name

    def arguments(self) -> dict[str, Any]:
        return quorum_arguments(DEAD_LETTER_EXCHANGE) | {"x-delivery-limit": self.delivery_limit}

    def delay_arguments(self, attempt: int) -> dict[str, Any]:
        # Expired messages go back through the default exchange straight to the work queue.
        return quorum_arguments("", dead_letter_routing_key=self.name) | {
            "x-message-ttl": self.retry_delays_ms[attempt - 1]
        }


def quorum_arguments(dead_letter_exchange: str, dead_letter_routing_key: str | None = None) -> dict[str, Any]:
    """Quorum dead-lettering at-least-once: without reject-publish RabbitMQ silently falls back to at-most-once."""
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": dead_letter_exchange,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    if dead_letter_routing_key is not None:
        arguments["x-dead-letter-routing-key"] = dead_letter_routing_key
    return arguments


DISTRIBUTION = WorkQueue("distribution", routing_keys=("lead.submitted", "lead.approved"))
EMAIL = WorkQueue("email", routing_keys=("email.send",))
REPORT_EXPORT = WorkQueue("report-export", routing_keys=("report.export",))
DLQ_OUTCOMES = WorkQueue("dlq-outcomes", routing_keys=("dead_letter.retry_succeeded",))
"""Tells dlq-service that a message retried from the DLQ was handled."""


@dataclass(frozen=True)
class Topology:
    work_queues: tuple[WorkQueue, ...]
    dlq_queue: str = DLQ_QUEUE
    dlq_arguments: dict[str, Any] = field(default_factory=lambda: {"x-queue-type": "quorum"})
    """No dead-letter exchange and no delivery limit: there is no DLQ for the DLQ, its consumer never rejects."""
    parking_queue: str = PARKING_QUEUE
    """No consumer: an operator reads it through the dlq-service's admin API."""

    def work_queue(self, name: str) -> WorkQueue:
        for queue in self.work_queues:
            if queue.name == name:
                return queue
        raise KeyError(name)

    def find_work_queue(self, name: str) -> WorkQueue | None:
        return next((queue for queue in self.work_queues if queue.name == name), None)

    def queue_for(self, routing_key: str) -> str:
        """The work queue a routing key lands in (bindings are exact keys, not patterns)."""
        for queue in self.work_queues:
            if routing_key in queue.routing_keys:
                return queue.name
        return "unrouted"


SCHEDULED_JOBS = WorkQueue("scheduled-jobs", routing_keys=("job.run_requested",))
"""Runs of scheduled jobs: retried with backoff and dead-lettered like any other work."""

TOPOLOGY = Topology(work_queues=(DISTRIBUTION, EMAIL, REPORT_EXPORT, DLQ_OUTCOMES, SCHEDULED_JOBS))
