"""HTTP_WORKERS: the dlq-service's worker processes each consume the dead-letter queue, and between them record
every dead letter exactly once, a redelivery landing on the other process included."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import aio_pika
import httpx
from aio_pika.abc import FieldValue
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from libs.db.tables import DeadLetter, DeadLetterEvent
from libs.messaging import headers as h
from libs.messaging.broker import DEAD_LETTERS
from libs.messaging.topology import DLQ_QUEUE
from tests.conftest import ServiceProcesses
from tests.services.conftest import eventually

PORT = 19170
WORKERS = 2
LETTERS = 300


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def consumers(rabbitmq_url: str) -> int:
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(DLQ_QUEUE, passive=True)
        return int(queue.declaration_result.consumer_count or 0)
    finally:
        await connection.close()


async def in_queue(rabbitmq_url: str, management_url: str) -> int:
    """Ready and unacked messages of the dead-letter queue (the management API's figures, a few seconds old)."""
    vhost = httpx.URL(rabbitmq_url).path.lstrip("/") or "/"
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{management_url}/api/queues/{quote(vhost, safe='')}/{DLQ_QUEUE}")
    answer.raise_for_status()
    return int(answer.json().get("messages", 0))


async def publish_each_twice(rabbitmq_url: str, queue: str) -> None:
    """Every dead letter twice, as a broker redelivers one: the same message and headers, the same dedupe key."""
    connection = await aio_pika.connect(rabbitmq_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(DEAD_LETTERS.name)
    failed_at = datetime.now(UTC).isoformat()
    headers: dict[str, FieldValue] = {
        h.REASON: "error", h.ORIGINAL_QUEUE: queue, h.ERROR_TYPE: "ValueError", h.ERROR_MESSAGE: "boom",
        h.ATTEMPTS: 4, h.SERVICE: "test", h.LAST_FAILURE_AT: failed_at,
    }  # fmt: skip
    for index in range(LETTERS):
        for _ in range(2):
            await exchange.publish(
                aio_pika.Message(b"{}", message_id=f"{queue}-{index}", headers=headers, delivery_mode=2),
                routing_key=queue,
            )
    await connection.close()


async def recorded(engine: AsyncEngine, queue: str) -> tuple[int, int]:
    """Entries and failure events of `queue`."""
    async with engine.connect() as connection:
        entries = await connection.scalar(select(func.count()).where(col(DeadLetter.queue_name) == queue))
        events = await connection.scalar(
            select(func.count())
            .select_from(DeadLetterEvent)
            .join(DeadLetter)
            .where(col(DeadLetter.queue_name) == queue)
        )
    return int(entries or 0), int(events or 0)


async def test_two_worker_processes_record_each_dead_letter_once(
    service_processes: ServiceProcesses, service_env: dict[str, str], rabbitmq_url: str, engine: AsyncEngine
) -> None:
    service = service_processes.start("dlq-service", PORT, HTTP_WORKERS=str(WORKERS))
    service.wait_ready()
    assert len(children(service.process.pid)) == WORKERS

    async def every_worker_consumes() -> bool:
        return await consumers(rabbitmq_url) == WORKERS

    await eventually(every_worker_consumes, 30)
    queue = f"workers-{uuid.uuid4().hex[:8]}"

    await publish_each_twice(rabbitmq_url, queue)

    async def all_handled() -> bool:
        # Every delivery acked (the duplicates too), not only every entry there.
        if await recorded(engine, queue) != (LETTERS, LETTERS):
            return False
        return await in_queue(rabbitmq_url, service_env["RABBITMQ_MANAGEMENT_URL"]) == 0

    await eventually(all_handled, 90)
    assert await recorded(engine, queue) == (LETTERS, LETTERS)
    assert await consumers(rabbitmq_url) == WORKERS
    assert service.stop() == 0
