"""Each service's own broker user and database role may do what its code does and is refused everything else,
on the real RabbitMQ and PostgreSQL. The expectations are read from the declarations (libs/messaging/permissions.py,
libs/db/grants.py), so a service without one, or a grant applied wider or narrower than declared, fails here."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from aiormq.exceptions import ChannelAccessRefused
from sqlalchemy import Executable, Table, cast, delete, false, func, insert, inspect, null, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlmodel import SQLModel, col

from distribution_worker.distribution import distribute
from distribution_worker.lead_state import LeadEvent
from distribution_worker.metrics import DistributionMetrics
from export_worker.exports import run_export
from ingest_gateway import top_ups
from libs.db import grants
from libs.db.grants import DELETE, INSERT, SELECT, UPDATE, Privilege
from libs.db.tables import (
    ExportKind,
    ExportStatus,
    Lead,
    LeadSource,
    LedgerEntry,
    Provider,
    ReportExport,
    Subscription,
    User,
    UserRole,
    metadata,
)
from libs.messaging import permissions
from libs.messaging.topology import DEAD_LETTER_EXCHANGE, DLQ_QUEUE, EVENTS_EXCHANGE, TOPOLOGY
from libs.runtime import SERVICES
from libs.telemetry import setup_telemetry
from tests.security.conftest import Principal

SERVICE_NAMES = [service.name for service in SERVICES]


def test_every_service_has_a_broker_user_and_a_database_role() -> None:
    assert set(permissions.GRANTS) == set(SERVICE_NAMES)
    assert set(grants.GRANTS) == set(SERVICE_NAMES)


def test_the_security_document_shows_every_declared_permission_and_grant() -> None:
    document = (Path(__file__).resolve().parents[2] / "docs" / "SECURITY.md").read_text()
    missing = [row for row in [*permissions.table_rows(), *grants.table_rows()] if row not in document]
    assert not missing, "docs/SECURITY.md: regenerate the tables with `show`"


def test_no_service_may_configure_an_exchange_or_another_services_queue() -> None:
    owners: dict[str, str] = {}
    for service, grant in permissions.GRANTS.items():
        for queue in grant.queues():
            assert queue not in owners, f"{queue} is configured by {owners[queue]} and {service}"
            owners[queue] = service
    assert set(owners) == set(permissions.queue_names())


# ---- PostgreSQL ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    what: str
    statement: Executable
    allowed: bool


def database_attempts(service: str) -> Iterator[Attempt]:
    """Every privilege on every column of every table and sequence, each in a statement that touches no row
    (PostgreSQL checks privileges before it looks at a single row)."""
    declared = {table_grant.table.name: table_grant for table_grant in grants.GRANTS[service]}

    def allows(table: Table, privilege: Privilege, column: str | None = None) -> bool:
        table_grant = declared.get(table.name)
        return table_grant is not None and table_grant.allows(privilege, column)

    for table in metadata.sorted_tables:
        for column in table.columns:
            where = f"{table.name}.{column.name}"
            yield Attempt(f"SELECT {where}", select(column).where(false()), allows(table, SELECT, column.name))
            if column.computed is not None:
                continue  # a generated column is written by PostgreSQL alone: no role may insert or update it
            no_row = select(cast(null(), column.type)).where(false())
            yield Attempt(
                f"INSERT {where}",
                insert(table).from_select([column.name], no_row, include_defaults=False),
                allows(table, INSERT, column.name),
            )
            yield Attempt(
                f"UPDATE {where}",
                update(table).values({column.name: None}).where(false()),
                allows(table, UPDATE, column.name),
            )
        yield Attempt(f"DELETE {table.name}", delete(table).where(false()), allows(table, DELETE))
        serial = table.autoincrement_column
        if serial is not None:
            sequence = f"{table.name}_{serial.name}_seq"
            table_grant = declared.get(table.name)
            yield Attempt(
                f"nextval {sequence}",
                select(func.nextval(sequence)),
                table_grant is not None and table_grant.sequence == sequence,
            )


INSUFFICIENT_PRIVILEGE = "42501"


async def outcome(engine: AsyncEngine, statement: Executable | str) -> bool:
    """True when PostgreSQL ran it, False when it refused it for lack of privilege."""
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement) if isinstance(statement, str) else statement)
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE:
            return False
        raise
    return True


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_a_database_role_holds_exactly_its_declared_grants(
    service: str, principals: dict[str, Principal]
) -> None:
    engine = create_async_engine(principals[service].database_url, pool_size=1)
    try:
        wrong = [
            f"{attempt.what}: {'refused' if attempt.allowed else 'allowed'}"
            for attempt in database_attempts(service)
            if await outcome(engine, attempt.statement) != attempt.allowed
        ]
    finally:
        await engine.dispose()
    assert not wrong, f"{service} differs from its declaration: {wrong}"


async def refused(principal: Principal, sql: str) -> bool:
    engine = create_async_engine(principal.database_url, pool_size=1)
    try:
        return not await outcome(engine, sql)
    finally:
        await engine.dispose()


async def test_the_email_worker_can_neither_read_the_ledger_nor_change_a_provider(
    principals: dict[str, Principal],
) -> None:
    email_worker = principals["email-worker"]
    assert await refused(email_worker, "SELECT amount_cents FROM ledger_entries LIMIT 1")
    assert await refused(email_worker, "UPDATE providers SET name = name")
    assert not await refused(email_worker, "SELECT count(*) FROM email_log")


async def test_only_the_gateway_and_the_distribution_worker_may_change_a_balance(
    principals: dict[str, Principal],
) -> None:
    may = {
        service
        for service in SERVICE_NAMES
        if not await refused(principals[service], "UPDATE providers SET balance_cents = balance_cents WHERE false")
    }
    assert may == {"ingest-gateway", "distribution-worker"}


async def test_no_service_reads_a_password_hash_it_does_not_check(principals: dict[str, Principal]) -> None:
    readers = {
        service
        for service in SERVICE_NAMES
        if not await refused(principals[service], "SELECT password_hash FROM users WHERE false")
    }
    # The gateway's /auth/token and the console (served by the dlq-service) both check passwords.
    assert readers == {"ingest-gateway", "dlq-service"}


async def test_the_export_worker_cannot_read_a_leads_contact(principals: dict[str, Principal]) -> None:
    assert await refused(principals["export-worker"], "SELECT contact FROM leads WHERE false")


async def test_the_scheduler_cannot_read_dead_letter_payloads(principals: dict[str, Principal]) -> None:
    assert await refused(principals["scheduler"], "SELECT payload FROM dead_letter_queue WHERE false")


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_a_service_role_cannot_create_tables(service: str, principals: dict[str, Principal]) -> None:
    assert await refused(principals[service], "CREATE TABLE public.intruder (id int)")


# The balance writers' own code, run as their own roles: a grant too tight for what the code does fails here.


async def new(connection: AsyncConnection, model: type[SQLModel], **values: object) -> uuid.UUID:
    inserted = await connection.execute(insert(model).values(**values).returning(*inspect(model).primary_key))
    return uuid.UUID(str(inserted.scalar_one()))


async def test_the_distribution_worker_charges_and_assigns_a_lead_as_its_own_role(
    database_url: str, principals: dict[str, Principal]
) -> None:
    owner = create_async_engine(database_url)
    worker = create_async_engine(principals["distribution-worker"].database_url)
    tag = uuid.uuid4().hex[:8]
    try:
        async with owner.begin() as connection:
            source = await new(connection, LeadSource, name=f"least-{tag}", api_key_hash=f"least-{tag}", trusted=True)
            provider = await new(connection, Provider, name="least", email=f"least-{tag}@example.com",
                                 balance_cents=1_000, low_balance_threshold_cents=900)  # fmt: skip
            await new(connection, Subscription, provider_id=provider, category=f"least-{tag}", zip_codes=["10115"],
                      price_cents=300)  # fmt: skip
            contact = {"name": "n", "email": "n@example.com", "phone": "+4930123456"}
            lead = await new(connection, Lead, source_id=source, external_id=tag, category=f"least-{tag}",
                             zip="10115", contact=contact)  # fmt: skip
        outcome = await distribute(
            worker, lead, message_id=f"least-{tag}", event=LeadEvent.submitted, max_providers=3,
            metrics=DistributionMetrics.create(setup_telemetry("least-privilege")),
        )  # fmt: skip
        assert [assigned.provider_id for assigned in outcome.assigned] == [provider]
        async with owner.connect() as connection:
            balance = await connection.scalar(select(col(Provider.balance_cents)).where(col(Provider.id) == provider))
            charges = await connection.scalar(
                select(col(LedgerEntry.amount_cents)).where(col(LedgerEntry.provider_id) == provider)
            )
        assert (balance, charges) == (700, -300)
    finally:
        await owner.dispose()
        await worker.dispose()


async def test_the_gateway_tops_up_a_balance_as_its_own_role(
    database_url: str, principals: dict[str, Principal]
) -> None:
    owner = create_async_engine(database_url)
    gateway = create_async_engine(principals["ingest-gateway"].database_url)
    try:
        async with owner.begin() as connection:
            provider = await new(connection, Provider, name="least", email=f"top-up-{uuid.uuid4().hex[:8]}@example.com")
        assert await top_ups.add(gateway, provider, 2_500, uuid.uuid4()) == 2_500
    finally:
        await owner.dispose()
        await gateway.dispose()


async def test_the_export_worker_writes_an_export_as_its_own_role(
    database_url: str, principals: dict[str, Principal], tmp_path: Path
) -> None:
    owner = create_async_engine(database_url)
    worker = create_async_engine(principals["export-worker"].database_url)
    tag = uuid.uuid4().hex[:8]
    try:
        async with owner.begin() as connection:
            provider = await new(connection, Provider, name="least", email=f"export-{tag}@example.com")
            admin = await new(connection, User, email=f"export-{tag}@example.com", role=UserRole.admin,
                              password_hash="not-a-hash")  # fmt: skip
            export = await new(connection, ReportExport, kind=ExportKind.assignments, provider_id=provider,
                               date_from=datetime.now(UTC).date(), date_to=datetime.now(UTC).date(),
                               requested_by=admin)  # fmt: skip
        finished = await run_export(worker, export, tmp_path, batch_rows=100)
        assert finished.requested_email == f"export-{tag}@example.com"
        async with owner.connect() as connection:
            status = await connection.scalar(select(col(ReportExport.status)).where(col(ReportExport.id) == export))
        assert status == ExportStatus.ready
    finally:
        await owner.dispose()
        await worker.dispose()


# ---- RabbitMQ -----------------------------------------------------------------------------------------------

Operation = Callable[[AbstractChannel], Awaitable[object]]


@dataclass(frozen=True)
class BrokerAttempt:
    what: str
    operation: Operation
    allowed: bool


def declare(queue: str) -> Operation:
    """Declares it as the topology does (same arguments), which is what a service does with its own queues."""
    arguments = TOPOLOGY.dlq_arguments if queue in permissions.dead_letter_queues() else None
    for work_queue in TOPOLOGY.work_queues:
        if queue == work_queue.name:
            arguments = work_queue.arguments()
        for attempt in range(1, work_queue.max_attempts):
            if queue == work_queue.delay_queue(attempt):
                arguments = work_queue.delay_arguments(attempt)

    async def operation(channel: AbstractChannel) -> None:
        await channel.declare_queue(queue, durable=True, arguments=arguments)

    return operation


async def hand_back(message: AbstractIncomingMessage) -> None:
    await message.nack(requeue=True)


def consume(queue: str) -> Operation:
    async def operation(channel: AbstractChannel) -> None:
        declared = await channel.declare_queue(queue, passive=True)
        tag = await declared.consume(hand_back)
        await declared.cancel(tag)

    return operation


def publish(exchange: str, routing_key: str) -> Operation:
    """Confirmed, so a refusal surfaces here rather than on the next operation."""

    async def operation(channel: AbstractChannel) -> None:
        target = channel.default_exchange if exchange == "" else await channel.get_exchange(exchange, ensure=False)
        await target.publish(aio_pika.Message(b"{}", message_id=str(uuid.uuid4())), routing_key=routing_key)

    return operation


def bind(queue: str, routing_key: str) -> Operation:
    async def operation(channel: AbstractChannel) -> None:
        declared = await channel.declare_queue(queue, passive=True)
        await declared.bind(EVENTS_EXCHANGE, routing_key=routing_key)

    return operation


def broker_attempts(service: str) -> Iterator[BrokerAttempt]:
    grant = permissions.GRANTS[service]
    own = set(grant.queues())
    for queue in permissions.queue_names():
        yield BrokerAttempt(f"declare {queue}", declare(queue), queue in own)
        yield BrokerAttempt(f"consume {queue}", consume(queue), queue in own)
    keys = set(grant.routing_keys())
    for key in sorted({key for queue in TOPOLOGY.work_queues for key in queue.routing_keys}):
        yield BrokerAttempt(f"publish {EVENTS_EXCHANGE} {key}", publish(EVENTS_EXCHANGE, key), key in keys)
    consumer = bool(grant.consumes)
    yield BrokerAttempt(f"publish {DEAD_LETTER_EXCHANGE}", publish(DEAD_LETTER_EXCHANGE, "any"), consumer)
    for work_queue in grant.consumes:
        delay_queue = work_queue.delay_queue(1)
        yield BrokerAttempt(f"publish to {delay_queue}", publish("", delay_queue), True)
        for key in work_queue.routing_keys:
            yield BrokerAttempt(f"bind {work_queue.name} {key}", bind(work_queue.name, key), True)
        yield BrokerAttempt(f"bind {work_queue.name} to everything", bind(work_queue.name, "#"), False)
    yield BrokerAttempt("publish to a queue by name", publish("", "distribution"), consumer or grant.republishes)
    yield BrokerAttempt("publish amq.topic", publish("amq.topic", "lead.approved"), False)


async def broker_outcome(connection: aio_pika.abc.AbstractConnection, operation: Operation) -> bool:
    channel = await connection.channel(publisher_confirms=True)
    try:
        await operation(channel)
    except ChannelAccessRefused:
        return False
    finally:
        if not channel.is_closed:
            await channel.close()
    return True


@pytest.mark.parametrize("service", SERVICE_NAMES)
async def test_a_broker_user_holds_exactly_its_declared_permissions(
    service: str, principals: dict[str, Principal]
) -> None:
    connection = await aio_pika.connect(principals[service].amqp_url)
    try:
        wrong = [
            f"{attempt.what}: {'refused' if attempt.allowed else 'allowed'}"
            for attempt in broker_attempts(service)
            if await broker_outcome(connection, attempt.operation) != attempt.allowed
        ]
    finally:
        await connection.close()
    assert not wrong, f"{service} differs from its declaration: {wrong}"


async def broker_refuses(principal: Principal, operation: Operation) -> bool:
    connection = await aio_pika.connect(principal.amqp_url)
    try:
        return not await broker_outcome(connection, operation)
    finally:
        await connection.close()


async def test_the_distribution_worker_cannot_approve_leads_or_read_the_dlq(principals: dict[str, Principal]) -> None:
    worker = principals["distribution-worker"]
    assert await broker_refuses(worker, publish(EVENTS_EXCHANGE, "lead.approved"))
    assert await broker_refuses(worker, consume(DLQ_QUEUE))
    assert not await broker_refuses(worker, publish(EVENTS_EXCHANGE, "email.send"))


async def test_the_dlq_services_management_user_reads_queue_statistics_and_nothing_more(
    principals: dict[str, Principal], security_vhost: str
) -> None:
    management_url = principals["dlq-service"].management_url
    assert management_url is not None
    parts = httpx.URL(management_url)
    base = f"{parts.scheme}://{parts.host}:{parts.port}/api"
    async with httpx.AsyncClient(base_url=base, auth=(parts.username, parts.password)) as api:
        statistics = await api.get(f"/queues/{security_vhost}/{DLQ_QUEUE}")
        assert statistics.status_code == 200
        assert "messages" in statistics.json()
        created = await api.put("/users/intruder", json={"password": "intruder-password", "tags": "administrator"})
        assert created.status_code in (401, 403)
        taken = await api.post(
            f"/queues/{security_vhost}/{DLQ_QUEUE}/get",
            json={"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"},
        )
        assert taken.status_code in (401, 403)
        whoami = (await api.get("/whoami")).json()
        assert whoami["tags"] == ["monitoring"]
