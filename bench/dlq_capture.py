"""DLQ capture throughput: dead letters recorded per second by one dlq-service process, from the `dlq` queue
already holding them, against a bare consume+ack of the same messages in the same run: into an empty table, or
into one already holding a million entries (seeded with COPY, bench/dlq_seed.py).

Alone, on this checkout: python -m bench.dlq_capture [--runs 1] [--letters 5000] [--stored 1000000] [--port N]
"""

from __future__ import annotations

import argparse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractChannel
from sqlalchemy import bindparam, func, select, text
from sqlmodel import col

from bench.broker import channel, consume_and_ack, declare_topology, depth, publish_all, purge_topology
from bench.dlq_seed import seed
from bench.harness import (
    BenchEnv,
    BenchError,
    load_average,
    reset_tables,
    running,
    start_service,
    time_drain,
    wait_until,
)
from bench.machine_cpu import Groups, cpu_details, database_name
from bench.report import Measurement
from bench.runner import run_alone
from libs.contracts import LeadApproved
from libs.db.tables import DeadLetterGroupCount
from libs.messaging import headers as h
from libs.messaging.topology import DEAD_LETTER_EXCHANGE, DLQ_QUEUE, EVENTS_EXCHANGE

PREFETCH = 400
"""dlq-service's default prefetch (its Settings): the raw consumer gets the same (a checkout before batched
capture ran with 10, one before two batches in flight with 200: measure it with --prefetch 10 or 200)."""
TARGET = 0.6
"""Issue 12's ratio, into an empty table and into a million rows: the machine CPU account says whether the cores
allow it."""
TRUNCATE = "TRUNCATE dead_letter_queue, dead_letter_events, dead_letter_retries, redrive_items, redrives CASCADE"
CAPTURED = text("SELECT count(*) FROM dead_letter_queue WHERE queue_name = :queue")
"""What the run captured, exactly: checked once, after the service stopped."""
CAPTURED_SO_FAR = select(func.coalesce(func.sum(col(DeadLetterGroupCount.unresolved)), 0)).where(
    col(DeadLetterGroupCount.queue_name) == bindparam("queue")
)
"""What the run captured, as the clock polls it every 20 ms: the unresolved count of the run's own queue's groups,
kept by dead_letter_queue's triggers in each batch's own statement (every captured letter is unresolved). Counting
the entries instead read every entry of the run again on each poll (an index scan with a heap fetch per entry:
27 ms at 20,000), about 0.4 ms of PostgreSQL's CPU per letter taken from the service it measures."""

STACK = """Traceback (most recent call last):
  File "/app/libs/messaging/consumer.py", line 112, in handle
    await self.handlers[decoded.message_type](decoded, delivery)
  File "/app/services/distribution-worker/distribution_worker/subscribers.py", line 58, in on_lead_approved
    outcome = await distribute(
              ^^^^^^^^^^^^^^^^^
  File "/app/services/distribution-worker/distribution_worker/distribution.py", line {line}, in distribute
    raise {error_type}(f"{message}")
{module}.{error_type}: {message}
"""
FAILURES = (
    ("BusinessRuleViolation", "lead {lead} does not exist", "permanent", 1, 97),
    ("TransientError", "approval of lead {lead} is not committed yet", "transient", 4, 108),
    ("SchemaMismatch", "lead.approved: approved_by: String should have at most 200 characters", "permanent", 1, 60),
    ("ConnectionDoesNotExistError", "connection was closed in the middle of operation", "transient", 4, 121),
)
"""A few failure groups, as the consumer policy reports them: error type, message, class, attempts, line."""


def dead_letter(number: int, queue: str) -> aio_pika.Message:
    """A final failure as libs/messaging/consumer.py publishes it to the dead-letter exchange: the original
    body and properties, our error headers (type, class, message, stack, attempts, times, origin)."""
    lead_id = uuid.uuid4()
    error_type, template, error_class, attempts, line = FAILURES[number % len(FAILURES)]
    message = template.format(lead=lead_id)
    last = datetime.now(UTC)
    first = last - timedelta(seconds=36 if attempts > 1 else 0)
    message_id = f"lead.approved:{lead_id}"
    return aio_pika.Message(
        LeadApproved(lead_id=lead_id, approved_by=str(uuid.uuid4())).model_dump_json().encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=message_id,
        type=LeadApproved.message_type,
        headers={
            h.CORRELATION_ID: message_id,
            h.ATTEMPT: attempts,
            h.FIRST_FAILURE_AT: first.isoformat(timespec="milliseconds"),
            h.LAST_FAILURE_AT: last.isoformat(timespec="milliseconds"),
            h.ORIGINAL_EXCHANGE: EVENTS_EXCHANGE,
            h.ORIGINAL_QUEUE: queue,
            h.ORIGINAL_ROUTING_KEY: LeadApproved.message_type,
            h.ERROR_TYPE: error_type,
            h.ERROR_CLASS: error_class,
            h.ERROR_MESSAGE: message,
            h.REASON: "error",
            h.ATTEMPTS: attempts,
            h.SERVICE: "distribution-worker",
            h.ERROR_STACK: STACK.format(line=line, error_type=error_type, message=message, module="libs.errors"),
        },
    )


@dataclass(frozen=True)
class DlqCapture:
    letters: int = 5000
    port: int = 18521
    stored: int = 0
    """Entries the table holds before the run: 0 empties it; more seeds it up to that many (kept between runs)."""
    prefetch: int = PREFETCH
    unit = "dead letters/s"
    baseline_label = "consume+ack of a quorum queue"

    @property
    def name(self) -> str:
        return "dlq_capture" if self.stored == 0 else "dlq_capture_stored"

    @property
    def figure(self) -> str:
        return "DLQ capture into an empty table" if self.stored == 0 else f"DLQ capture with {self.stored:,} stored"

    async def measure(self, checkout: Path, env: BenchEnv) -> Measurement:
        load = load_average()
        # The letters' original queue is the run's own name: what the run captured is counted apart from any
        # other dead letter in the table.
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        letters = [dead_letter(number, queue) for number in range(self.letters)]
        engine = env.engine()

        async def captured() -> int:
            async with engine.connect() as connection:
                return int(await connection.scalar(CAPTURED, {"queue": queue}) or 0)

        async def captured_so_far() -> int:
            async with engine.connect() as connection:
                return int(await connection.scalar(CAPTURED_SO_FAR, {"queue": queue}) or 0)

        try:
            if self.stored:
                await seed(engine, self.stored)
            elif env.fresh_tables:
                await reset_tables(engine, TRUNCATE)
            async with channel(env.rabbitmq_url) as chan:
                await declare_topology(chan)
                await purge_topology(chan)
                dead_letters = await chan.get_exchange(DEAD_LETTER_EXCHANGE)
                await publish_all(dead_letters, [(queue, letter) for letter in letters])
                service = start_service(checkout, "dlq-service", env, self.port)
                async with running(service, wait_ready=False) as dlq_service:
                    groups = Groups(database_name(env.database_url), {"dlq-service": [dlq_service.process.pid]})
                    drain = await time_drain(
                        captured_so_far, self.letters, dlq_service, timeout_s=max(300, self.letters / 5), groups=groups
                    )
                await wait_until(lambda: self._empty(chan), 10, f"{DLQ_QUEUE} queue empty after dlq-service stopped")
            if (stored := await captured()) != self.letters:
                raise BenchError(f"{stored} entries for {self.letters} dead letters")
            raw = await consume_and_ack(
                env.rabbitmq_url, letters, prefetch=self.prefetch, timeout_s=120,
                groups=Groups(database_name(env.database_url)),
            )  # fmt: skip
        finally:
            async with channel(env.rabbitmq_url) as chan:
                await declare_topology(chan)
                await purge_topology(chan)
            await engine.dispose()
        return Measurement(
            value=drain.rate, baseline=raw.rate, count=drain.items, load=load,
            # Also in microseconds: capture's CPU per letter is a fraction of a millisecond, and the report shows
            # milliseconds to one decimal.
            details={"cpu_per_item_ms": drain.cpu_per_item_ms, "cpu_per_item_us": drain.cpu_per_item_ms * 1000,
                     **cpu_details(drain.machine, drain.items, target_rate=TARGET * raw.rate),
                     **cpu_details(raw.machine, raw.items, "baseline_")},
        )  # fmt: skip

    @staticmethod
    async def _empty(chan: AbstractChannel) -> bool:
        return await depth(chan, DLQ_QUEUE) == 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dlq_capture", description=__doc__)
    parser.add_argument("--letters", type=int, default=DlqCapture.letters)
    parser.add_argument("--stored", type=int, default=0, help="entries stored before the run (seeded with COPY)")
    parser.add_argument("--port", type=int, default=DlqCapture.port)
    parser.add_argument("--prefetch", type=int, default=PREFETCH, help="the raw consumer's, as the service's")
    arguments, rest = parser.parse_known_args()
    capture = DlqCapture(arguments.letters, arguments.port, arguments.stored, arguments.prefetch)
    run_alone(capture, rest)


if __name__ == "__main__":
    main()
