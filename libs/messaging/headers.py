"""Names of the headers the project sets. `x-` headers belong to the broker; ours start with `fmhl-`."""

ATTEMPT = "fmhl-attempt"
"""Failed deliveries so far (0 or absent on the first delivery)."""
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

# Error text travels in headers, which share the AMQP frame with the body's metadata: keep them bounded.
MAX_MESSAGE_CHARS = 2_000
MAX_STACK_CHARS = 8_000
