"""The broker side of the benchmarks: the project's topology declared from its data, purges, confirmed
publishing in bulk, queue depth, and the raw consume+ack ceiling every queue benchmark is compared with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractRobustConnection

from bench.harness import Drain
from bench.machine_cpu import Groups, since, snapshot
from libs.messaging.topology import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, TOPOLOGY

RAW_QUEUE = "bench.raw"
PUBLISH_WINDOW = 200
"""Confirms outstanding at once while filling a queue: enough to pipeline, few enough to stay bounded."""


@asynccontextmanager
async def channel(rabbitmq_url: str) -> AsyncIterator[AbstractChannel]:
    connection: AbstractRobustConnection = await aio_pika.connect_robust(rabbitmq_url)
    try:
        yield await connection.channel(publisher_confirms=True, on_return_raises=True)
    finally:
        await connection.close()


async def declare_topology(chan: AbstractChannel) -> None:
    """As every service declares it at start (libs/messaging/broker.py), from the same data, so the queues
    exist before a benchmark fills them and before the service under test starts."""
    events = await chan.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    dead_letters = await chan.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.FANOUT, durable=True)
    dlq = await chan.declare_queue(TOPOLOGY.dlq_queue, durable=True, arguments=TOPOLOGY.dlq_arguments)
    await dlq.bind(dead_letters, routing_key="")
    for work_queue in TOPOLOGY.work_queues:
        queue = await chan.declare_queue(work_queue.name, durable=True, arguments=work_queue.arguments())
        for routing_key in work_queue.routing_keys:
            await queue.bind(events, routing_key=routing_key)
        for attempt in range(1, work_queue.max_attempts):
            await chan.declare_queue(
                work_queue.delay_queue(attempt), durable=True, arguments=work_queue.delay_arguments(attempt)
            )


def topology_queues() -> list[str]:
    names = [TOPOLOGY.dlq_queue]
    for work_queue in TOPOLOGY.work_queues:
        names += [work_queue.name, *(work_queue.delay_queue(n) for n in range(1, work_queue.max_attempts))]
    return names


async def purge_topology(chan: AbstractChannel) -> None:
    """Every queue of the topology emptied: a run starts with nothing left over from the one before."""
    for name in topology_queues():
        queue = await chan.get_queue(name, ensure=True)
        await queue.purge()


async def depth(chan: AbstractChannel, queue_name: str) -> int:
    """Ready messages (a passive declare: unacked ones are not counted)."""
    queue = await chan.declare_queue(queue_name, passive=True)
    return int(queue.declaration_result.message_count or 0)


async def publish_all(exchange: AbstractExchange, messages: Sequence[tuple[str, aio_pika.Message]]) -> None:
    """(routing key, message) pairs, each confirmed by the broker; unroutable ones raise (mandatory)."""
    for start in range(0, len(messages), PUBLISH_WINDOW):
        await asyncio.gather(
            *(
                exchange.publish(message, routing_key=routing_key, mandatory=True)
                for routing_key, message in messages[start : start + PUBLISH_WINDOW]
            )
        )


async def consume_and_ack(
    rabbitmq_url: str,
    messages: Sequence[aio_pika.Message],
    *,
    prefetch: int,
    timeout_s: float,
    groups: Groups | None = None,
) -> Drain:
    """A bare consumer (this process) acking each delivery from a quorum queue holding `messages`: what the broker
    and the client library allow before any of our code runs. The same client (aio-pika) and prefetch as the
    services. With `groups`, the machine's CPU account over the timed consume."""
    async with channel(rabbitmq_url) as chan:
        queue = await chan.declare_queue(RAW_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        await queue.purge()
        await publish_all(chan.default_exchange, [(RAW_QUEUE, message) for message in messages])
        await chan.set_qos(prefetch_count=prefetch)
        remaining = len(messages)
        drained = asyncio.Event()

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal remaining
            await message.ack()
            remaining -= 1
            if remaining == 0:
                drained.set()

        machine = snapshot(groups) if groups else None
        started, cpu = time.perf_counter(), time.process_time()
        tag = await queue.consume(on_message)
        await asyncio.wait_for(drained.wait(), timeout_s)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        use = since(machine, groups) if groups and machine else None
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    return Drain(len(messages), elapsed, cpu, use)
