"""Retrying dead letters: one entry at a time (a double click publishes once), or a bulk redrive whose
selection is fixed when requested and which runs in the background at a bounded rate, cancellable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from faststream.rabbit import RabbitExchange
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs import audit
from libs.logging import get_logger
from libs.messaging import headers as h
from libs.messaging.publisher import Publisher, PublishFailed

log = get_logger("dlq_service.retries")
# What the failure added is dropped, so the retried message starts over as a first delivery.
_FAILURE_HEADERS = frozenset({h.ATTEMPT, h.REASON, h.ERROR_TYPE, h.ERROR_CLASS, h.ERROR_MESSAGE, h.ERROR_STACK,
                              h.ATTEMPTS, h.SERVICE, h.FIRST_FAILURE_AT, h.LAST_FAILURE_AT, h.DLQ_ENTRY})  # fmt: skip


class EntryNotFound(Exception):
    pass


class EntryNotRetryable(Exception):
    """The entry is already being retried or is resolved."""


def retry_headers(stored: Mapping[str, Any], entry_id: uuid.UUID) -> dict[str, Any]:
    carried = {key: value for key, value in stored.items() if not key.startswith("x-") and key not in _FAILURE_HEADERS}
    return carried | {h.DLQ_ENTRY: str(entry_id)}


async def retry_entry(
    engine: AsyncEngine, publisher: Publisher, entry_id: uuid.UUID, actor: str, redrive_id: uuid.UUID | None = None
) -> None:
    """Flip failed -> retrying, republish with confirm, commit. A publish failure rolls the flip back."""
    async with engine.begin() as connection:
        entry = (
            await connection.execute(
                text(
                    "UPDATE dead_letter_queue SET status = 'retrying' WHERE id = :id AND status = 'failed' "
                    "RETURNING raw_body, headers, original_exchange, original_routing_key, queue_name, message_id, "
                    "correlation_id, message_type, content_type"
                ),
                {"id": entry_id},
            )
        ).first()
        if entry is None:
            status = await connection.scalar(
                text("SELECT status FROM dead_letter_queue WHERE id = :id"), {"id": entry_id}
            )
            if status is None:
                raise EntryNotFound(str(entry_id))
            raise EntryNotRetryable(f"entry is {status}")
        await connection.execute(
            text("INSERT INTO dead_letter_retries (entry_id, redrive_id, requested_by) VALUES (:id, :redrive, :by)"),
            {"id": entry_id, "redrive": redrive_id, "by": actor},
        )
        # A broker dead letter may have come straight from a queue: then the default exchange routes by name.
        exchange = entry.original_exchange or ""
        routing_key = entry.original_routing_key or entry.queue_name
        if not exchange and not entry.original_routing_key:
            routing_key = entry.queue_name
        await publisher.publish_raw(
            bytes(entry.raw_body),
            exchange=RabbitExchange(exchange, declare=False) if exchange else None,
            routing_key=routing_key,
            message_id=entry.message_id,
            correlation_id=entry.correlation_id,
            message_type=entry.message_type,
            content_type=entry.content_type or "application/json",
            headers=retry_headers(entry.headers or {}, entry_id),
        )
        await audit.record(
            connection, actor=actor, action="dlq.job_retried", entity_type="dead_letter", entity_id=str(entry_id),
            metadata={"redrive_id": redrive_id, "queue": entry.queue_name},
        )  # fmt: skip


async def create_redrive(
    engine: AsyncEngine, entry_ids: list[uuid.UUID], actor: str, rate: int, selection: Mapping[str, Any]
) -> uuid.UUID:
    async with engine.begin() as connection:
        redrive_id = await connection.scalar(
            text(
                "INSERT INTO redrives (requested_by, selection, rate_per_second, selected) "
                "VALUES (:by, CAST(:selection AS jsonb), :rate, :selected) RETURNING id"
            ),
            {"by": actor, "selection": orjson.dumps(selection, default=str).decode(), "rate": rate,
             "selected": len(entry_ids)},
        )  # fmt: skip
        if entry_ids:
            await connection.execute(
                text(
                    "INSERT INTO redrive_items (redrive_id, position, entry_id) "
                    "SELECT :redrive, ordinality, entry FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS t(entry)"
                ),
                {"redrive": redrive_id, "ids": entry_ids},
            )
        await audit.record(
            connection, actor=actor, action="dlq.redrive_started", entity_type="redrive", entity_id=str(redrive_id),
            metadata={"selected": len(entry_ids), "rate_per_second": rate},
        )  # fmt: skip
    return uuid.UUID(str(redrive_id))


class Redriver:
    """Runs redrives in this process; a redrive left running by a stopped process resumes at start."""

    def __init__(self, engine: AsyncEngine, publisher: Publisher) -> None:
        self.engine = engine
        self.publisher = publisher
        self._tasks: dict[uuid.UUID, asyncio.Task[None]] = {}

    def start(self, redrive_id: uuid.UUID) -> None:
        task = asyncio.create_task(self._run(redrive_id), name=f"redrive-{redrive_id}")
        self._tasks[redrive_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(redrive_id, None))

    async def resume(self) -> None:
        async with self.engine.connect() as connection:
            running = (await connection.execute(text("SELECT id FROM redrives WHERE status = 'running'"))).scalars()
            for redrive_id in running.all():
                if redrive_id not in self._tasks:
                    self.start(redrive_id)

    async def stop(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _run(self, redrive_id: uuid.UUID) -> None:
        loop = asyncio.get_running_loop()
        async with self.engine.connect() as connection:
            redrive = (
                await connection.execute(
                    text("SELECT rate_per_second, requested_by FROM redrives WHERE id = :id"), {"id": redrive_id}
                )
            ).one()
        interval = 1.0 / redrive.rate_per_second
        next_at = loop.time()
        while True:
            async with self.engine.connect() as connection:
                status = await connection.scalar(text("SELECT status FROM redrives WHERE id = :id"), {"id": redrive_id})
                item = (
                    await connection.execute(
                        text(
                            "SELECT position, entry_id FROM redrive_items WHERE redrive_id = :id AND state = 'pending' "
                            "ORDER BY position LIMIT 1"
                        ),
                        {"id": redrive_id},
                    )
                ).first()
            if status != "running":
                return
            if item is None:
                break
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at = max(next_at + interval, loop.time())
            state = await self._send(redrive_id, item.entry_id, redrive.requested_by)
            async with self.engine.begin() as connection:
                await connection.execute(
                    text(
                        f"UPDATE redrives SET {state} = {state} + 1 WHERE id = :id"  # noqa: S608 - state is ours
                    ),
                    {"id": redrive_id},
                )
                await connection.execute(
                    text("UPDATE redrive_items SET state = :state WHERE redrive_id = :id AND position = :position"),
                    {"state": state, "id": redrive_id, "position": item.position},
                )
        async with self.engine.begin() as connection:
            await connection.execute(
                text(
                    "UPDATE redrives SET status = 'completed', finished_at = now() "
                    "WHERE id = :id AND status = 'running'"
                ),
                {"id": redrive_id},
            )
        log.info("dlq.redrive_completed", {"redrive_id": str(redrive_id)})

    async def _send(self, redrive_id: uuid.UUID, entry_id: uuid.UUID, actor: str) -> str:
        try:
            await retry_entry(self.engine, self.publisher, entry_id, actor, redrive_id)
        except (EntryNotRetryable, EntryNotFound):
            return "skipped"
        except PublishFailed as error:
            log.error("dlq.redrive_publish_failed", error, {"redrive_id": str(redrive_id), "entry_id": str(entry_id)})
            return "failed"
        return "sent"
