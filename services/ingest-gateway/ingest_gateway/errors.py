"""What the gateway's rules refuse, said in the domain's words; the routes answer each with its HTTP status."""

from __future__ import annotations


class NotFound(LookupError):
    """The request names something that does not exist, or that is not the caller's to see."""


class Conflict(Exception):
    """The request contradicts the current state: already decided, already reported, not ready yet."""


class Forbidden(Exception):
    """The caller's role may not do this, whatever it names."""


class Invalid(ValueError):
    """A request its schema accepts but a rule refuses; `field` names the input at fault."""

    def __init__(self, detail: str, *, field: str, message: str | None = None) -> None:
        super().__init__(detail)
        self.field = field
        self.message = message or detail
