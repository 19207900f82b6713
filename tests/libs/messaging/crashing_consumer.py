"""A worker process that dies (os._exit) while holding the poison message n < 0, as a crashing handler would."""

import asyncio
import os
import sys

import orjson
from faststream.rabbit import RabbitRouter

from libs.messaging.broker import create_broker, declare_topology
from libs.messaging.consumer import ConsumerPolicy, Delivery, subscribe
from libs.messaging.publisher import Publisher
from libs.messaging.topology import Topology, WorkQueue
from libs.telemetry import setup_telemetry
from tests.libs.messaging.ping import Ping


async def main(url: str, spec: dict[str, object]) -> None:
    queue = WorkQueue(**{key: tuple(v) if isinstance(v, list) else v for key, v in spec.items()})  # type: ignore[arg-type]
    telemetry = setup_telemetry("crashing-consumer")
    broker = create_broker(url, telemetry, service="crashing-consumer", prefetch=1)

    async def on_ping(ping: Ping, delivery: Delivery) -> None:
        if ping.n < 0:
            os._exit(3)
        print(f"handled {ping.n}", flush=True)

    router = RabbitRouter()
    publisher = Publisher(broker, Topology((queue,)), telemetry, 5.0)
    subscribe(router, ConsumerPolicy(queue, {Ping: on_ping}, publisher, telemetry, service="crashing-consumer"))
    broker.include_router(router)
    await broker.connect()
    await declare_topology(broker, Topology((queue,)))
    await broker.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], orjson.loads(sys.argv[2])))
