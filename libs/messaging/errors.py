"""How the consumer policy tells a failure worth retrying from one that never will succeed."""

from __future__ import annotations


class PermanentError(Exception):
    """Retrying cannot help: the message goes to the DLQ at once."""


class UndecodableBody(PermanentError):
    """The body is not JSON (or too deep, too large a number, not UTF-8)."""


class SchemaMismatch(PermanentError):
    """The body is JSON but does not match the contract of its message type."""


class UnknownMessageType(PermanentError):
    """No handler on this queue knows the message type."""


class UndecodableProperties(PermanentError):
    """An AMQP property (or header name) is not valid UTF-8: the message cannot be identified or answered."""


class MissingMessageId(PermanentError):
    """Without a message id a redelivery cannot be told from a new message, so it is not handled at all."""


class BusinessRuleViolation(PermanentError):
    """The message is well formed but the domain refuses it."""


class TransientError(Exception):
    """Worth retrying: a dependency is down, slow or busy. Unclassified exceptions are treated the same way."""


def is_permanent(error: BaseException) -> bool:
    """Ours say so; an input too large or too deep to convert (int() of 5,000 digits, float overflow, nesting
    past the recursion limit) fails the same way on every attempt."""
    if isinstance(error, PermanentError | OverflowError | RecursionError):
        return True
    return isinstance(error, ValueError) and "integer string conversion" in str(error)
