"""What the console's query strings and forms mean: pure parsing into the domain's filters, and back into links.

Every page's state is in its query string, so a runbook can link straight at a filtered view; a value that does
not parse is named on the page instead of failing the request.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import urlencode

from dlq_service.audit_trail import AuditFilters
from dlq_service.listing import ListFilters
from libs.db.tables import DeadLetterReason, DeadLetterStatus

E = TypeVar("E", bound=enum.StrEnum)
MAX_TEXT = 200
LIST_LIMIT = 50
LIST_FIELDS = ("queue", "status", "reason", "error_type", "service", "fingerprint", "from", "to", "q")
AUDIT_FIELDS = ("actor", "action", "entity_type", "entity_id")
NOTICES = {
    "retried": "Sent back to its queue: the entry is retrying until the message is handled.",
    "resolved": "Resolved.",
    "edited": "The edited body was validated, kept beside the original and sent back to its queue.",
    "group-resolved": "Every unresolved entry of the group was resolved.",
    "cancelled": "Cancelled: nothing more is sent; what was sent stays sent.",
    "job-run": "Run requested: the scheduler queued a run of the job.",
    "job-pause": "Paused for every scheduler replica.",
    "job-resume": "Resumed.",
    "logged-out": "Logged out: the session is over on the server.",
}
"""Messages a redirect may ask a page to show, by key: a page never echoes text from its query string."""


@dataclass
class Parsed:
    """Filters read from a query string, with what could not be read, by field."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def text(params: Mapping[str, str], name: str, parsed: Parsed, limit: int = MAX_TEXT) -> str | None:
    value = (params.get(name) or "").strip()
    if not value:
        return None
    if "\x00" in value or len(value) > limit:
        parsed.errors[name] = f"at most {limit} characters, no NUL"
        return None
    parsed.values[name] = value
    return value


def choice(params: Mapping[str, str], name: str, kind: type[E], parsed: Parsed) -> E | None:
    value = text(params, name, parsed)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        del parsed.values[name]
        parsed.errors[name] = "one of " + ", ".join(member.value for member in kind)
        return None


def moment(params: Mapping[str, str], name: str, parsed: Parsed) -> datetime | None:
    """ISO-8601 or what `<input type=datetime-local>` sends; a time without a zone is UTC."""
    value = text(params, name, parsed, limit=40)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        del parsed.values[name]
        parsed.errors[name] = "a date and time, e.g. 2026-11-30T14:00"
        return None


def list_filters(params: Mapping[str, str]) -> tuple[ListFilters, Parsed]:
    parsed = Parsed()
    filters = ListFilters(
        queue=text(params, "queue", parsed, 100),
        status=choice(params, "status", DeadLetterStatus, parsed),
        reason=choice(params, "reason", DeadLetterReason, parsed),
        error_type=text(params, "error_type", parsed),
        service=text(params, "service", parsed, 100),
        fingerprint=text(params, "fingerprint", parsed, 64),
        failed_from=moment(params, "from", parsed),
        failed_to=moment(params, "to", parsed),
        text=text(params, "q", parsed),
    )
    return filters, parsed


def audit_filters(params: Mapping[str, str]) -> tuple[AuditFilters, Parsed]:
    parsed = Parsed()
    filters = AuditFilters(
        actor=text(params, "actor", parsed),
        action=text(params, "action", parsed, 100),
        entity_type=text(params, "entity_type", parsed, 64),
        entity_id=text(params, "entity_id", parsed),
    )
    return filters, parsed


def link(path: str, **params: str | None) -> str:
    """`path` with the given parameters that have a value, URL-encoded."""
    present = {name: value for name, value in params.items() if value}
    return f"{path}?{urlencode(present)}" if present else path


def rate(value: str | None, default: int, maximum: int) -> int:
    """A redrive's messages per second from a form: the default when empty or not a number, at most `maximum`."""
    try:
        asked = int(value or "")
    except ValueError:
        return default
    return min(max(asked, 1), maximum)


ENTITY_PAGES = {"dead_letter": "/console/dead-letters/{}", "redrive": "/console/redrives/{}"}


def entity_link(entity_type: str, entity_id: str | None) -> str | None:
    """The console page of an audited entity, for the kinds it has pages for; ids are checked, never pasted."""
    if entity_id is None:
        return None
    if entity_type in ENTITY_PAGES:
        try:
            return ENTITY_PAGES[entity_type].format(uuid.UUID(entity_id))
        except ValueError:
            return None
    if entity_type == "scheduled_job":
        return "/console/jobs#" + job_anchor(entity_id)
    if entity_type == "dead_letter_group":
        queue, _, fingerprint = entity_id.partition("/")
        return link("/console/dead-letters", queue=queue, fingerprint=fingerprint)
    return None


def job_anchor(name: str) -> str:
    """An id for a job's row that no job name can break out of."""
    return f"job-{uuid.uuid5(uuid.NAMESPACE_URL, name)}"


def safe_next(target: str | None) -> str:
    """Where to go after login: a console path only (never another site, `//host` or a scheme)."""
    if target and target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console"
