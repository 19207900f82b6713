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


class BusinessRuleViolation(PermanentError):
    """The message is well formed but the domain refuses it."""


class TransientError(Exception):
    """Worth retrying: a dependency is down, slow or busy. Unclassified exceptions are treated the same way."""


def is_permanent(error: BaseException) -> bool:
    return isinstance(error, PermanentError)
