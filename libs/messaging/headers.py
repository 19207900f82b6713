"""Names of the headers the project sets. `x-` headers belong to the broker; ours start with `fmhl-`."""

ATTEMPT = "fmhl-attempt"
"""Failed deliveries so far (0 or absent on the first delivery). Written for people and the DLQ: the consumer
policy counts attempts from the delay queue a message came back from, never from this header."""
REASON = "fmhl-reason"
ERROR_TYPE = "fmhl-error-type"
ERROR_CLASS = "fmhl-error-class"
ERROR_MESSAGE = "fmhl-error-message"
ERROR_STACK = "fmhl-error-stack"
ATTEMPTS = "fmhl-attempts"
SERVICE = "fmhl-service"
ORIGINAL_EXCHANGE = "fmhl-original-exchange"
ORIGINAL_QUEUE = "fmhl-original-queue"
ORIGINAL_ROUTING_KEY = "fmhl-original-routing-key"
FIRST_FAILURE_AT = "fmhl-first-failure-at"
LAST_FAILURE_AT = "fmhl-last-failure-at"
CORRELATION_ID = "fmhl-correlation-id"
DLQ_ENTRY = "fmhl-dlq-entry"
"""Set by a retry from the DLQ: names the entry the outcome belongs to."""
DLQ_RETRY = "fmhl-dlq-retry"
"""Set by a retry from the DLQ: which retry of the entry this message is."""
DLQ_SIGNATURE = "fmhl-dlq-signature"
"""Set by a retry from the DLQ: its HMAC over entry and retry, which only the dlq-service can make or check."""
HEADERS_DROPPED = "fmhl-headers-dropped"
"""Set by the consumer policy instead of a publisher's headers too large to carry along with its own."""
PARKED_ERROR = "fmhl-parked-error"
"""On a message in `dlq.parking`: why the dlq-service could not record it."""
PARKED_AT = "fmhl-parked-at"
PARKED_ATTEMPTS = "fmhl-parked-attempts"

FAILURE_HEADERS = frozenset({ATTEMPT, REASON, ATTEMPTS, SERVICE, FIRST_FAILURE_AT, LAST_FAILURE_AT})
FAILURE_PREFIXES = ("fmhl-error-", "fmhl-original-")

# Error text travels in headers, which share the AMQP frame with the body's metadata: keep them bounded.
MAX_MESSAGE_CHARS = 2_000
MAX_STACK_CHARS = 8_000


def is_failure_header(name: str) -> bool:
    """Written by the consumer policy when a delivery fails: a publisher's own value is never believed."""
    return name in FAILURE_HEADERS or name.startswith(FAILURE_PREFIXES)
