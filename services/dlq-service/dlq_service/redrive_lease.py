"""The lease that lets exactly one dlq-service replica drive a bulk redrive: a session-level PostgreSQL advisory
lock, held by the connection the redrive's sends commit on, so it ends when that session ends."""

from __future__ import annotations

import uuid
import zlib
from contextlib import suppress

from sqlalchemy import Integer, bindparam, false, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

LOCK_CLASS = zlib.crc32(b"fmhl.redrive") - 2**31
"""First key of the two-key advisory lock space (which never overlaps the one-key space other locks use)."""
HOLDER_GONE_MS = 20_000
"""A holder whose packets stop being acknowledged (vanished host, cut network) loses its session after this
long (`tcp_user_timeout`; an idle one by the engine's keepalives in about 25 s), and so its lease."""

_TRY_LOCK = select(
    func.pg_try_advisory_lock(bindparam("lock_class", type_=Integer), bindparam("lock_object", type_=Integer))
)
_HOLDER_GONE = select(func.set_config("tcp_user_timeout", str(HOLDER_GONE_MS), false()))


def lock_keys(redrive_id: uuid.UUID) -> dict[str, int]:
    """Two redrives may share the second key (one in four billion): one then waits for the other to finish."""
    return {"lock_class": LOCK_CLASS, "lock_object": int.from_bytes(redrive_id.bytes[:4], "big", signed=True)}


class RedriveLease:
    """Held while `connection` lives: every send of the redrive commits on it, so a send can only commit while
    its sender holds the lease. Closing the connection (or the process dying) gives the lease up at once."""

    def __init__(self, redrive_id: uuid.UUID, connection: AsyncConnection) -> None:
        self.redrive_id = redrive_id
        self.connection = connection

    @classmethod
    async def take(cls, engine: AsyncEngine, redrive_id: uuid.UUID) -> RedriveLease | None:
        """The lease, or None when another session holds it."""
        connection = await engine.connect()
        try:
            await connection.execute(_HOLDER_GONE)
            taken = await connection.scalar(_TRY_LOCK, lock_keys(redrive_id))
            # A session lock outlives the transaction; an open one would meet idle_in_transaction_session_timeout.
            await connection.commit()
        except BaseException:
            await _discard(connection)
            raise
        if not taken:
            await _discard(connection)
            return None
        return cls(redrive_id, connection)

    async def give_up(self) -> None:
        """Closes the session rather than unlocking: the pool never hands out a connection still holding it."""
        await _discard(self.connection)


async def _discard(connection: AsyncConnection) -> None:
    with suppress(DBAPIError, OSError):
        await connection.invalidate()
    with suppress(DBAPIError, OSError):
        await connection.close()
