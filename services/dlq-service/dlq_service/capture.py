"""Persisting dead letters: one row per failed message, updated (not duplicated) when a retry fails again.

Idempotent: each dead letter has a dedupe key; a redelivered one finds its event row and changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import orjson
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dlq_service.dead_letters import DeadLetter


@dataclass(frozen=True)
class Captured:
    entry_id: uuid.UUID | None
    outcome: str  # "new", "failed_again", "duplicate"


def _json(value: object) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class _AlreadyRecorded(Exception):
    """Raised inside the transaction so that everything it wrote is rolled back."""


async def _event(connection: AsyncConnection, entry_id: uuid.UUID, letter: DeadLetter) -> None:
    """The dead letter's event row; when a concurrent delivery recorded it first, undo this transaction."""
    inserted = await connection.scalar(
        text(
            "INSERT INTO dead_letter_events (entry_id, dedupe_key, reason, error_type, error_message, attempts, "
            "failed_at) VALUES (:entry, :key, :reason, :type, :message, :attempts, :failed_at) "
            "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
        ),
        {"entry": entry_id, "key": letter.dedupe_key, "reason": letter.reason, "type": letter.error_type,
         "message": letter.error_message, "attempts": letter.attempts, "failed_at": letter.last_failed_at},
    )  # fmt: skip
    if inserted is None:
        raise _AlreadyRecorded


async def _seen(connection: AsyncConnection, letter: DeadLetter) -> bool:
    found = await connection.scalar(
        text("SELECT 1 FROM dead_letter_events WHERE dedupe_key = :key"), {"key": letter.dedupe_key}
    )
    return found is not None


async def capture(engine: AsyncEngine, letter: DeadLetter) -> Captured:
    try:
        async with engine.begin() as connection:
            if await _seen(connection, letter):
                return Captured(None, "duplicate")
            if letter.retried_entry is not None:
                updated = await connection.scalar(
                    text(
                        "UPDATE dead_letter_queue SET retry_count = retry_count + 1, status = 'failed', "
                        "resolved = FALSE, resolved_at = NULL, resolution = NULL, failed_at = :at, "
                        "last_failed_at = :at, error_type = :type, error_message = :message, "
                        "stack_trace = :stack, attempts = :attempts, reason = :reason WHERE id = :id RETURNING id"
                    ),
                    {"at": letter.last_failed_at, "type": letter.error_type, "message": letter.error_message,
                     "stack": letter.stack_trace, "attempts": letter.attempts, "reason": letter.reason,
                     "id": letter.retried_entry},
                )  # fmt: skip
                if updated is not None:
                    await _event(connection, updated, letter)
                    await connection.execute(
                        text(
                            "UPDATE dead_letter_retries SET outcome = 'failed_again', outcome_at = now() "
                            "WHERE id = (SELECT max(id) FROM dead_letter_retries WHERE entry_id = :id "
                            "AND outcome = 'sent')"
                        ),
                        {"id": updated},
                    )
                    return Captured(updated, "failed_again")
            entry_id = uuid.uuid4()
            await connection.execute(
                text(
                    "INSERT INTO dead_letter_queue (id, queue_name, job_id, payload, error_message, stack_trace, "
                    "attempts, failed_at, original_exchange, original_routing_key, message_id, correlation_id, "
                    "headers, raw_body, reason, error_type, fingerprint, service, first_failed_at, last_failed_at, "
                    "message_type, content_type) "
                    "VALUES (:id, :queue, :job, CAST(:payload AS jsonb), :message, :stack, :attempts, :last, "
                    ":exchange, :routing_key, :message_id, :correlation_id, CAST(:headers AS jsonb), :body, "
                    ":reason, :type, :fingerprint, :service, :first, :last, :message_type, :content_type)"
                ),
                {"id": entry_id, "queue": letter.queue[:100], "job": (letter.message_id or "")[:100] or None,
                 "payload": _json(letter.payload), "message": letter.error_message, "stack": letter.stack_trace,
                 "attempts": letter.attempts, "last": letter.last_failed_at, "exchange": letter.exchange[:255],
                 "routing_key": letter.routing_key[:255], "message_id": (letter.message_id or "")[:200] or None,
                 "correlation_id": (letter.correlation_id or "")[:128] or None, "headers": _json(letter.headers),
                 "body": letter.raw_body, "reason": letter.reason, "type": letter.error_type,
                 "fingerprint": letter.fingerprint, "service": letter.service, "first": letter.first_failed_at,
                 "message_type": (letter.message_type or "")[:100] or None,
                 "content_type": (letter.content_type or "")[:100] or None},
            )  # fmt: skip
            await _event(connection, entry_id, letter)
            return Captured(entry_id, "new")
    except (IntegrityError, _AlreadyRecorded):
        # Another delivery (or replica) recorded the same dead letter between our check and our insert.
        return Captured(None, "duplicate")


async def resolve_after_success(engine: AsyncEngine, entry_id: uuid.UUID) -> bool:
    async with engine.begin() as connection:
        resolved = await connection.scalar(
            text(
                "UPDATE dead_letter_queue SET status = 'resolved', resolved = TRUE, resolved_at = now(), "
                "resolution = 'retry_succeeded' WHERE id = :id AND status = 'retrying' RETURNING id"
            ),
            {"id": entry_id},
        )
        await connection.execute(
            text(
                "UPDATE dead_letter_retries SET outcome = 'succeeded', outcome_at = now() "
                "WHERE id = (SELECT max(id) FROM dead_letter_retries WHERE entry_id = :id AND outcome = 'sent')"
            ),
            {"id": entry_id},
        )
    return resolved is not None
