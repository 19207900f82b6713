"""The admin API's database connections, on a real dlq-service process and the real PostgreSQL: the connections
that admin requests needed at once stay open for the next ones. A connection opened for one request and closed
after it costs a new server process, authentication and statements prepared again, and lengthened the list's
p99 under 8 clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from dlq_service.settings import Settings
from tests.conftest import ServiceProcesses
from tests.services.conftest import eventually
from tests.services.dlq_service.processes import admin_headers, free_port

CLIENTS = 8
"""Admin clients reading at once: as many as issue 12's benchmark runs, fewer than the pool keeps by default."""
LIST = "/api/v1/admin/queues/dlq"
SERVICE = "dlq-service"


async def service_sessions(connection: AsyncConnection, *, waiting_on_a_lock: bool = False) -> set[int]:
    """The dlq-service's server processes on this database (one per open connection)."""
    rows = await connection.execute(
        text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = :name "
            "AND (wait_event_type = 'Lock' OR NOT :waiting)"
        ),
        {"name": SERVICE, "waiting": waiting_on_a_lock},
    )
    return set(rows.scalars())


@asynccontextmanager
async def dead_letters_locked(engine: AsyncEngine) -> AsyncIterator[None]:
    """The dead-letter table locked by a transaction of the test's own: every list statement waits for it, holding
    its connection, so that the requests sent meanwhile all hold one at once (well within the service's 5 s
    lock_timeout)."""
    async with engine.connect() as locker:
        await locker.execute(text("LOCK TABLE dead_letter_queue IN ACCESS EXCLUSIVE MODE"))
        yield
        await locker.rollback()


async def read_at_once(engine: AsyncEngine, observer: AsyncConnection, url: str, headers: dict[str, str]) -> None:
    """CLIENTS list requests, each holding a connection until all of them do."""

    async def all_waiting() -> bool:
        return len(await service_sessions(observer, waiting_on_a_lock=True)) >= CLIENTS

    async with httpx.AsyncClient(timeout=30) as client:
        async with dead_letters_locked(engine):
            requests = [asyncio.ensure_future(client.get(url, headers=headers)) for _ in range(CLIENTS)]
            await eventually(all_waiting, 4)
        answers = await asyncio.gather(*requests)
    assert [answer.status_code for answer in answers] == [200] * CLIENTS, answers[0].text


async def test_the_connections_admin_requests_needed_at_once_stay_open_for_the_next_ones(
    service_processes: ServiceProcesses, engine: AsyncEngine
) -> None:
    assert Settings.model_fields["db_pool_size"].default >= CLIENTS
    # One process, so that every client reaches the same pool.
    service = service_processes.start(SERVICE, free_port(), HTTP_WORKERS="1")
    service.wait_ready()
    headers = await admin_headers(engine)
    async with engine.connect() as observer:
        await observer.execution_options(isolation_level="AUTOCOMMIT")

        await read_at_once(engine, observer, service.url(LIST), headers)
        kept = await service_sessions(observer)
        assert len(kept) >= CLIENTS, f"{len(kept)} of the {CLIENTS} connections kept"

        await read_at_once(engine, observer, service.url(LIST), headers)
        assert kept <= await service_sessions(observer), "connections closed and opened again"
    assert service.stop() == 0
