"""A million stored dead letters, written with COPY: the store as it looks after a month of failures, for the
benchmarks that measure capture and the admin list at that size.

The rows look like captured ones: a month of arrivals (newest last), five queues, two hundred failure groups, a
few statuses and reasons in realistic proportions, a lead's JSON as payload, one event row each. Every seeded
row's queue starts with SEED_PREFIX, so a benchmark tells them apart from what its own run captured.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import orjson
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from libs.db.tables import DeadLetter, DeadLetterEvent, DeadLetterReason, DeadLetterStatus, Resolution

SEED_PREFIX = "seed-"
QUEUES = tuple(f"{SEED_PREFIX}{name}" for name in ("distribution", "email", "report-export", "scheduled-jobs", "x"))
SERVICES = ("distribution-worker", "email-worker", "export-worker", "scheduler", "ingest-gateway")
GROUPS = 200
SPAN = timedelta(days=30)
CHUNK = 20_000
ERRORS = (
    ("BusinessRuleViolation", "lead {lead} does not exist"),
    ("TransientError", "approval of lead {lead} is not committed yet"),
    ("SchemaMismatch", "lead.approved: approved_by: String should have at most 200 characters"),
    ("ConnectionDoesNotExistError", "connection was closed in the middle of operation"),
    ("SMTPRecipientsRefused", "recipient {email} refused: mailbox unavailable"),
    ("InsufficientBalance", "provider {provider} cannot pay for lead {lead}"),
    ("TimeoutError", "export {lead} did not finish within 300 s"),
    ("DeadlockDetected", "deadlock detected while charging provider {provider}"),
)
CATEGORIES = ("roofing", "solar", "plumbing", "hvac", "windows", "insurance")
ENTRY_COLUMNS = (
    "id", "queue_name", "job_id", "payload", "error_message", "stack_trace", "attempts", "failed_at", "resolved",
    "resolved_at", "created_at", "original_exchange", "original_routing_key", "message_id", "correlation_id",
    "headers", "raw_body", "reason", "error_type", "fingerprint", "service", "first_failed_at", "last_failed_at",
    "retry_count", "status", "resolution", "message_type", "content_type",
)  # fmt: skip
EVENT_COLUMNS = ("entry_id", "dedupe_key", "reason", "error_type", "error_message", "attempts", "failed_at")
KEPT_DURING_COPY = frozenset({"idx_dlq_group_first", "idx_dlq_group_latest"})
"""Indexes the COPY's statement triggers read (the groups' first and latest failure)."""
SEEDED = select(func.count()).where(col(DeadLetter.queue_name).startswith(SEED_PREFIX))


@dataclass(frozen=True)
class Group:
    queue: str
    service: str
    error_type: str
    template: str
    fingerprint: str


def groups() -> list[Group]:
    picks = random.Random(12)
    found = []
    for number in range(GROUPS):
        error_type, template = ERRORS[number % len(ERRORS)]
        found.append(
            Group(
                queue=QUEUES[number % len(QUEUES)],
                service=SERVICES[number % len(SERVICES)],
                error_type=error_type if number < len(ERRORS) * 3 else f"{error_type}{number}",
                template=template,
                fingerprint=hashlib.sha256(f"group {number} {picks.random()}".encode()).hexdigest(),
            )
        )
    return found


def _reason(draw: float) -> DeadLetterReason:
    if draw < 0.90:
        return DeadLetterReason.error
    if draw < 0.95:
        return DeadLetterReason.delivery_limit
    return DeadLetterReason.expired if draw < 0.98 else DeadLetterReason.rejected


def _status(draw: float) -> DeadLetterStatus:
    if draw < 0.80:
        return DeadLetterStatus.failed
    return DeadLetterStatus.resolved if draw < 0.97 else DeadLetterStatus.retrying


def rows(count: int, start: int, now: datetime) -> Iterator[tuple[tuple[object, ...], tuple[object, ...]]]:
    """(entry, event) records numbered `start`..: entry n arrived at `now - SPAN + n * SPAN / count`. A group's
    share follows a long tail (a few groups hold most entries), as failures do. Ids and dedupe keys come from a
    stream of this top-up's own (`start` and `now`): after entries were deleted (the retention job, a resolve and
    clean-up), numbering from the count left would otherwise make again the ids and keys of entries still stored."""
    picks = random.Random(f"{start} {now.isoformat()}")
    every = groups()
    step = SPAN / count
    for number in range(start, start + count):
        head = picks.random() < 0.7
        group = every[min(int(picks.paretovariate(1.2)) - 1, GROUPS - 1) if head else picks.randrange(GROUPS)]
        lead, provider = uuid.UUID(int=picks.getrandbits(128), version=4), picks.randrange(10_000)
        email = f"lead{number}@example.com"
        created = now - SPAN + (number - start) * step
        last = created - timedelta(milliseconds=picks.randrange(50, 2_000))
        if picks.random() < 0.05:  # failed again after a retry, later than it arrived
            last = min(now, created + timedelta(seconds=picks.randrange(60, 3 * 86_400)))
        first = last - timedelta(seconds=36)
        status, reason = _status(picks.random()), _reason(picks.random())
        payload = {"lead_id": str(lead), "email": email, "phone": f"+1555{number % 10_000_000:07d}",
                   "zip": f"{picks.randrange(10_000, 99_999)}", "category": CATEGORIES[number % len(CATEGORIES)],
                   "provider_id": provider}  # fmt: skip
        body = orjson.dumps(payload)
        message = group.template.format(lead=lead, email=email, provider=provider)
        message_id = f"lead.approved:{lead}"
        entry_id = uuid.UUID(int=picks.getrandbits(128), version=4)
        resolved = status is DeadLetterStatus.resolved
        entry = (
            entry_id, group.queue, message_id, body.decode(), message, None, 4, last, resolved,
            last + timedelta(hours=1) if resolved else None, created, "fmhl.events", "lead.approved", message_id,
            message_id, "{}", body, reason.value, group.error_type, group.fingerprint, group.service, first, last,
            1 if last > created else 0, status.value, Resolution.manual.value if resolved else None,
            "lead.approved", "application/json",
        )  # fmt: skip
        event = (entry_id, hashlib.sha256(f"seed {entry_id}".encode()).hexdigest(), reason.value, group.error_type,
                 message, 4, last)  # fmt: skip
        yield entry, event


async def seeded(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(SEEDED) or 0)


async def seed(engine: AsyncEngine, count: int) -> float:
    """Tops the seeded rows up to `count` (none when they are there already); seconds it took."""
    started = time.perf_counter()
    have = await seeded(engine)
    if have >= count:
        return 0.0
    now = datetime.now(UTC)
    # The entries' own indexes are dropped and built again after the COPY, as a bulk load does: building a
    # trigram index at once is many times faster than growing it row by row. The models declare them, so they
    # come back exactly as migrated (the primary key stays: events refer to it). The groups' two indexes stay:
    # each COPY's statement trigger refreshes the groups it touched with a probe of each (migration 0012), which
    # without them is a scan of every entry stored so far, per group and chunk (a fresh million-entry seed ran
    # for over half an hour and was not a tenth of the way further). Only for a load at least as large as what is
    # stored: a few entries more (after some were deleted) go into the indexes as they are, where building them all
    # again over a million entries takes minutes.
    bulk = count - have >= have
    indexes = [
        index
        for index in DeadLetter.__table__.indexes  # type: ignore[attr-defined]
        if bulk and index.name not in KEPT_DURING_COPY
    ]
    async with engine.begin() as connection:
        await connection.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
        for index in indexes:
            await connection.run_sync(partial(index.drop, checkfirst=True))
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        records = rows(count - have, have, now)
        while chunk := [record for _, record in zip(range(CHUNK), records, strict=False)]:
            await driver.copy_records_to_table(
                DeadLetter.__tablename__, records=[entry for entry, _ in chunk], columns=ENTRY_COLUMNS
            )
            await driver.copy_records_to_table(
                DeadLetterEvent.__tablename__, records=[event for _, event in chunk], columns=EVENT_COLUMNS
            )
        for index in indexes:
            await connection.run_sync(index.create)
    # VACUUM as well as ANALYZE: the store is read as autovacuum keeps it (visibility map set, so a keyset walk's
    # index-only scans need no heap; hint bits set, so the first reads write nothing), whenever autovacuum would
    # have come (it goes by the server's counts of changes, which a restart may have lost).
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql(f"VACUUM (ANALYZE) {DeadLetter.__tablename__}")
        await autocommit.exec_driver_sql(f"VACUUM (ANALYZE) {DeadLetterEvent.__tablename__}")
    return time.perf_counter() - started
