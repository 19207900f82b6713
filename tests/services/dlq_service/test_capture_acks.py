"""Recorded dead letters are acked together (one `multiple` ack for a committed batch's run of delivery tags), and
a `multiple` ack never settles a delivery that is still held, being written, or handed back."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from dlq_service.subscribers import Acks, SettledTags
from tests.services.conftest import eventually


def test_a_run_of_tags_from_the_floor_is_one_multiple_ack() -> None:
    assert SettledTags().acks({1: None, 2: None, 3: None}) == [(3, True)]


def test_a_lone_tag_is_acked_alone() -> None:
    assert SettledTags().acks({1: None}) == [(1, False)]


def test_tags_past_an_unsettled_delivery_are_acked_alone_and_the_run_resumes_once_it_is_settled() -> None:
    settled = SettledTags()
    assert settled.acks({1: None, 2: None, 4: None, 5: None}) == [(2, True), (4, False), (5, False)]
    # 3 recorded in a later batch with 6 and 7: 4 and 5 are settled already, so one ack covers 3 to 7.
    assert settled.acks({3: None, 6: None, 7: None}) == [(7, True)]
    assert settled.floor == 8


def test_a_delivery_handed_back_is_settled_in_the_run_but_never_the_tag_acked() -> None:
    settled = SettledTags()
    settled.settled_alone(3)
    assert settled.acks({1: None, 2: None}) == [(2, True)]
    assert settled.floor == 4


async def delivered(channel: AbstractChannel, count: int) -> tuple[AbstractQueue, list[AbstractIncomingMessage]]:
    """A queue of `count` messages named m-0, m-1, ..., all delivered (unacked) to one consumer on `channel`."""
    queue = await channel.declare_queue(f"test-acks-{uuid.uuid4().hex[:8]}", durable=True)
    for number in range(count):
        await channel.default_exchange.publish(aio_pika.Message(b"{}", message_id=f"m-{number}"), queue.name)
    deliveries: list[AbstractIncomingMessage] = []

    async def on_message(message: AbstractIncomingMessage) -> None:
        deliveries.append(message)

    await queue.consume(on_message)

    async def all_delivered() -> bool:
        return len(deliveries) == count

    await eventually(all_delivered)
    return queue, deliveries


async def back_in_queue(rabbitmq_url: str, queue: AbstractQueue) -> list[str]:
    """The messages the broker has back once the consumer's connection is gone: the ones never settled."""
    connection = await aio_pika.connect(rabbitmq_url)
    async with connection:
        channel = await connection.channel()
        back = await channel.declare_queue(queue.name, passive=True)
        ids = []
        while (message := await back.get(fail=False, no_ack=True)) is not None:
            ids.append(message.message_id or "")
        await back.delete(if_unused=False, if_empty=False)
    return sorted(ids)


async def test_a_batch_acked_together_leaves_nothing_to_redeliver(rabbitmq_url: str) -> None:
    connection = await aio_pika.connect(rabbitmq_url)
    channel = await connection.channel()
    queue, deliveries = await delivered(channel, 5)
    acks = Acks()
    await asyncio.gather(*(acks.ack(message) for message in deliveries))
    await connection.close()
    assert await back_in_queue(rabbitmq_url, queue) == []


async def test_a_letter_held_in_the_middle_of_a_batch_stays_unacked(rabbitmq_url: str) -> None:
    connection = await aio_pika.connect(rabbitmq_url)
    channel = await connection.channel()
    queue, deliveries = await delivered(channel, 5)
    acks = Acks()
    await asyncio.gather(*(acks.ack(message) for number, message in enumerate(deliveries) if number != 2))
    await connection.close()  # the held letter's handler never finished: the broker has it back
    assert await back_in_queue(rabbitmq_url, queue) == ["m-2"]


async def test_a_letter_handed_back_in_the_middle_of_a_batch_is_redelivered_and_the_rest_are_not(
    rabbitmq_url: str,
) -> None:
    connection = await aio_pika.connect(rabbitmq_url)
    channel = await connection.channel()
    queue, deliveries = await delivered(channel, 5)
    acks = Acks()
    await acks.hand_back(deliveries[2])

    async def redelivered() -> bool:
        return len(deliveries) == 6

    await eventually(redelivered)
    await asyncio.gather(*(acks.ack(message) for number, message in enumerate(deliveries) if number not in (2, 5)))
    await connection.close()
    assert deliveries[5].message_id == "m-2"
    assert await back_in_queue(rabbitmq_url, queue) == ["m-2"]
