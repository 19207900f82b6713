"""The gateway's transactional outbox: an event is staged in the transaction of the rows it announces, and the
relay publishes staged events with publisher confirms, deleting each row once the broker confirmed it.

So a 2xx means the rows and their event are committed together: a broker that is slow, full or unreachable
delays the event, never loses it. The relay publishes at least once (a row confirmed but not yet deleted when
its relay dies is published again after its lease); every consumer is idempotent on the message id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import BigInteger, Interval, any_, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from ingest_gateway.metrics import GatewayMetrics
from libs.contracts import Message
from libs.db import retry_on_disconnect
from libs.db.tables.outbox import OutboxMessage
from libs.health import Check
from libs.logging import get_logger
from libs.messaging.publisher import Envelope, Publisher, PublishFailed

log = get_logger("ingest_gateway.outbox")

BATCH = 50
"""Rows a relay takes at once; their publishes are in flight together, each confirmed on its own. Small enough
that a batch's burst of publishing (CPU in this same process) does not hold up the requests beside it for long."""
POLL_S = 0.5
"""How often a relay looks for rows it was not woken for: staged by another process, or due again."""
RETRY_S = 1.0
"""A row whose publish failed is due again this long after."""
MAX_BACKOFF_S = 5.0
"""While publishing fails, a relay waits up to this long between tries (doubling from RETRY_S)."""

_STAGE = insert(OutboxMessage)
_DUE = (
    select(col(OutboxMessage.id))
    .where(col(OutboxMessage.available_at) <= func.now())
    .order_by(col(OutboxMessage.available_at), col(OutboxMessage.id))
    .limit(bindparam("batch"))
    .with_for_update(skip_locked=True)
)
# One statement takes a batch and leases it: no transaction stays open while the relay publishes, and relays in
# other processes skip what this one holds.
_CLAIM = (
    update(OutboxMessage)
    .where(col(OutboxMessage.id).in_(_DUE.scalar_subquery()))
    .values(
        available_at=func.now() + bindparam("lease", type_=Interval),
        attempts=col(OutboxMessage.attempts) + 1,
    )
    .returning(
        col(OutboxMessage.id),
        col(OutboxMessage.message_id),
        col(OutboxMessage.message_type),
        col(OutboxMessage.correlation_id),
        col(OutboxMessage.body),
        col(OutboxMessage.traceparent),
    )
)
_IDS = bindparam("ids", type_=ARRAY(BigInteger))
_SENT = delete(OutboxMessage).where(col(OutboxMessage.id) == any_(_IDS))
_RETRY = (
    update(OutboxMessage)
    .where(col(OutboxMessage.id) == any_(_IDS))
    .values(available_at=func.now() + bindparam("retry", type_=Interval))
)
_BACKLOG = select(func.count(), func.extract("epoch", func.now() - func.min(col(OutboxMessage.created_at))))


def staged(envelope: Envelope) -> dict[str, Any]:
    """An envelope as an outbox row's values."""
    return {
        "message_id": envelope.message_id,
        "message_type": envelope.message_type,
        "correlation_id": envelope.correlation_id,
        "body": envelope.body,
        "traceparent": envelope.traceparent,
    }


async def stage(connection: AsyncConnection, message: Message, message_id: str) -> None:
    """Stages `message` in the caller's transaction: it is published once that commits, and never if it does not."""
    await connection.execute(_STAGE, staged(Envelope.of(message, message_id)))


class Relay:
    """Publishes staged events in the background: woken by `notify()` after a commit that staged one, and every
    POLL_S for rows staged elsewhere or due again. Several processes may each run one."""

    def __init__(
        self, engine: AsyncEngine, publisher: Publisher, metrics: GatewayMetrics, *, batch: int = BATCH
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.metrics = metrics
        self.batch = batch
        # Long enough for every publish of a batch to end (each is bounded by the publish timeout).
        self.lease = timedelta(seconds=max(30.0, 6 * publisher.timeout_s))
        self.failing: str | None = None
        """Why the last try to publish (or to read the outbox) failed; None once one succeeds."""
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        self._wake.set()

    async def relay_once(self) -> int:
        """Publishes one batch of due rows; the number confirmed. Raises what reading the outbox raised."""
        async with self.engine.connect() as connection:
            # Each statement is its own transaction (no BEGIN and COMMIT round trips): the claim is atomic.
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            rows = (await connection.execute(_CLAIM, {"batch": self.batch, "lease": self.lease})).all()
        if not rows:
            self.failing = None
            return 0
        outcomes = await asyncio.gather(
            *(self.publisher.send_staged(Envelope(row.message_id, row.message_type, row.correlation_id, row.body,
                                                  row.traceparent)) for row in rows),
            return_exceptions=True,
        )  # fmt: skip
        sent = [row.id for row, outcome in zip(rows, outcomes, strict=True) if outcome is None]
        failed = [(row, outcome) for row, outcome in zip(rows, outcomes, strict=True) if outcome is not None]
        async with self.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            if sent:
                await connection.execute(_SENT, {"ids": sent})
            if failed:
                retry = timedelta(seconds=RETRY_S)
                await connection.execute(_RETRY, {"ids": [row.id for row, _ in failed], "retry": retry})
        self.metrics.outbox_published.add(len(sent), {"outcome": "confirmed"})
        if not failed:
            self.failing = None
            return len(sent)
        self.metrics.outbox_published.add(len(failed), {"outcome": "failed"})
        row, error = failed[0]
        self.failing = f"{len(failed)} of {len(rows)} not confirmed: {error}"[:300]
        log.warn("outbox.publish_failed", {"failed": len(failed), "of": len(rows), "error": self.failing,
                                           "message_id": row.message_id})  # fmt: skip
        for _, unexpected in failed:
            if not isinstance(unexpected, PublishFailed):
                # Not the broker refusing or missing: a defect, logged; the row is retried all the same.
                log.error("outbox.publish_error", unexpected, {"message_id": row.message_id})
        return len(sent)

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stopping:
            self._wake.clear()
            try:
                confirmed = await self.relay_once()
            except Exception as error:  # the relay outlives any outage; the rows stay staged
                self.failing = f"{type(error).__name__}: {error}"[:300]
                log.warn("outbox.relay_failed", {"error": self.failing})
                confirmed = 0
            if self.failing is not None:
                backoff = min(max(backoff * 2, RETRY_S), MAX_BACKOFF_S)
                await self._pause(backoff, wakeable=False)
                continue
            backoff = 0.0
            if confirmed < self.batch:
                await self._pause(POLL_S, wakeable=True)

    async def _pause(self, seconds: float, *, wakeable: bool) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                if wakeable:
                    await self._wake.wait()
                else:
                    await asyncio.sleep(seconds)

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Lets the batch in flight finish (its publishes are bounded), so its rows are not published twice."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            async with asyncio.timeout(self.publisher.timeout_s + 2):
                await asyncio.shield(self._task)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    def check(self) -> Check:
        """Readiness: down while the relay cannot publish (or read the outbox); reports the backlog."""

        async def backlog() -> tuple[int, float | None]:
            async with self.engine.connect() as connection:
                row = (await connection.execute(_BACKLOG)).one()
            return int(row[0]), None if row[1] is None else float(row[1])

        async def outbox() -> Mapping[str, Any]:
            pending, oldest_s = await retry_on_disconnect(backlog)
            if self.failing is not None:
                raise ConnectionError(f"the relay cannot publish: {self.failing}; {pending} events waiting")
            return {"pending": pending, "oldest_s": round(oldest_s or 0.0, 1)}

        return outbox
