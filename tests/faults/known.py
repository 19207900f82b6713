"""Findings only the fault tests themselves make (the checker makes the others): named once, so a test and its
results speak of the same thing. Each is a failure: no test tolerates a known defect today."""

from __future__ import annotations

SLOW_DEAD_CONNECTION_DETECTION = "dead broker connections noticed later than twice the heartbeat"
ANSWERED_500 = "requests answered 500 instead of 202 or 503 while the broker was unreachable"
WORKER_STUCK_UNREADY = "a service stayed unready after the fault healed"
