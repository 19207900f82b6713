"""A message type and queue builder that only the messaging tests use."""

import uuid
from typing import Any, ClassVar

from libs.contracts import Message
from libs.messaging.topology import WorkQueue


class Ping(Message):
    message_type: ClassVar[str] = "test.ping"
    n: int


def ping_queue(**overrides: Any) -> WorkQueue:
    name = f"test-policy-{uuid.uuid4().hex[:8]}"
    spec: dict[str, Any] = {"name": name, "routing_keys": (name,), "retry_delays_ms": (200, 600, 1200)}
    return WorkQueue(**(spec | overrides))
