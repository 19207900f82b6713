"""The dlq-service against what anyone with publish rights can send, on the real RabbitMQ and PostgreSQL: every
dead letter recorded once whatever it holds, parked (never looped) when PostgreSQL keeps refusing it, handed back
while PostgreSQL is unreachable; retries only to the topology, outcomes only with the service's signature; lists
masked and bounded; no admin input answered with a 500."""

from __future__ import annotations

import asyncio
import base64
import logging
import struct
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import orjson
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pamqp import commands
from pydantic import SecretStr
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import col

from dlq_service.dead_letters import CUT, ORIGINAL_PROPERTIES
from dlq_service.main import build as build_dlq
from dlq_service.settings import Settings as DlqSettings
from dlq_service.signing import RetrySigner
from libs.auth import Principal, Tokens
from libs.contracts import DeadLetterRetrySucceeded
from libs.db.tables import User, UserRole
from libs.messaging import headers as h
from libs.messaging.broker import DEAD_LETTERS
from libs.messaging.topology import PARKING_QUEUE, SCHEDULED_JOBS
from libs.messaging.wire import UNDECODABLE_PROPERTIES
from tests.conftest import TEST_JWT_SECRET
from tests.security.test_broker_workers import SIGNING_KEY, crafted, publish_crafted
from tests.services.conftest import built_app, eventually, metric_value, publisher_for

pytestmark = [pytest.mark.broker, pytest.mark.database]
API = "/api/v1/admin/queues"
UNCONSUMED = SCHEDULED_JOBS.name
"""A work queue of the topology nothing consumes here: retried messages stay in it to be looked at."""


class TcpProxy:
    """PostgreSQL behind a cable this test can pull: `cut` refuses new connections and drops open ones. It runs on
    a loop of its own: the app under test runs on the test client's thread, and startup waits on the database."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="postgresql-proxy", daemon=True)
        self._thread.start()

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout=10)

    def start(self) -> None:
        self._run(self._start())

    def cut(self) -> None:
        self._run(self._cut())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        self._open |= {client_writer, upstream_writer}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()
                self._open.discard(writer)

        await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))


@dataclass
class DlqService:
    client: AsyncTestClient[Litestar]
    engine: AsyncEngine
    proxy: TcpProxy
    url: str
    admin: dict[str, str]
    signer: RetrySigner = field(default_factory=lambda: RetrySigner(SecretStr(SIGNING_KEY)))

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as connection:
            return await connection.scalar(text(sql), params)

    async def rows_with_body(self, body: bytes) -> list[dict[str, Any]]:
        async with self.engine.connect() as connection:
            rows = await connection.execute(text("SELECT * FROM dead_letter_queue WHERE raw_body = :b"), {"b": body})
            return [dict(row._mapping) for row in rows]

    async def recorded(self, body: bytes, timeout: float = 20.0) -> dict[str, Any]:
        async def present() -> bool:
            return bool(await self.rows_with_body(body))

        await eventually(present, timeout)
        [row] = await self.rows_with_body(body)
        return row

    async def publish(self, body: bytes, **properties: Any) -> None:
        """A dead letter put straight on the dead-letter exchange, as any holder of write rights on it could."""
        connection = await aio_pika.connect(self.url)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(DEAD_LETTERS.name)
        await exchange.publish(aio_pika.Message(body, delivery_mode=2, **properties), routing_key="")
        await connection.close()

    async def publish_crafted(self, body: bytes, properties: commands.Basic.Properties) -> None:
        await publish_crafted(self.url, body, properties, exchange=DEAD_LETTERS.name)

    async def parked_depth(self) -> int:
        connection = await aio_pika.connect(self.url)
        channel = await connection.channel()
        depth = (await channel.declare_queue(PARKING_QUEUE, passive=True)).declaration_result.message_count
        await connection.close()
        return int(depth or 0)


async def _admin_headers(engine: AsyncEngine) -> dict[str, str]:
    async with engine.begin() as connection:
        user_id = await connection.scalar(
            insert(User)
            .values(email=f"dlq-admin-{uuid.uuid4().hex[:8]}@example.com", role=UserRole.admin, password_hash="-")
            .returning(col(User.id))
        )
    token = Tokens(TEST_JWT_SECRET, "fmhl-ops", "fmhl-api", 900).issue(
        Principal(subject=str(user_id), role="admin", provider_id=None, amr=("pwd", "otp"))
    )
    return {"Authorization": f"Bearer {token}"}


async def _purge(url: str, *queues: str) -> None:
    connection = await aio_pika.connect(url)
    channel = await connection.channel()
    for name in queues:
        await (await channel.get_queue(name)).purge()
    await connection.close()


@pytest.fixture(scope="module")
async def dlq(service_env: dict[str, str], database_url: str) -> AsyncIterator[DlqService]:
    database = urlsplit(service_env["DATABASE_URL"])
    proxy = TcpProxy(database.hostname or "127.0.0.1", database.port or 5432)
    proxy.start()
    proxied = urlunsplit(database._replace(netloc=f"{database.netloc.rsplit('@', 1)[0]}@127.0.0.1:{proxy.port}"))
    # One dead letter at a time: a marker published after others is recorded after them.
    env = service_env | {"DATABASE_URL": proxied, "DLQ_RETRY_SIGNING_KEY": SIGNING_KEY, "PREFETCH": "1",
                         "NACK_BACKOFF_S": "0.2", "HEALTH_CHECK_TIMEOUT_S": "1"}  # fmt: skip
    engine = create_async_engine(database_url)
    await _purge(service_env["RABBITMQ_URL"], UNCONSUMED)
    async with AsyncTestClient(built_app(build_dlq, DlqSettings, env)) as client:
        yield DlqService(client, engine, proxy, service_env["RABBITMQ_URL"], await _admin_headers(engine))
    await _purge(service_env["RABBITMQ_URL"], UNCONSUMED)
    await engine.dispose()
    proxy.close()


def policy(queue: str = "hostile", /, **extra: Any) -> dict[str, Any]:
    """What our consumer policy writes on a message it gives up on."""
    failed_at = datetime.now(UTC).isoformat()
    return {h.REASON: "error", h.ORIGINAL_QUEUE: queue, h.ORIGINAL_EXCHANGE: "fmhl.events",
            h.ORIGINAL_ROUTING_KEY: queue, h.ERROR_TYPE: "ValueError", h.ERROR_MESSAGE: "boom", h.ATTEMPTS: 4,
            h.SERVICE: "test", h.FIRST_FAILURE_AT: failed_at, h.LAST_FAILURE_AT: failed_at} | extra  # fmt: skip


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"n": value}
    return value


def nested_table_bytes(depth: int) -> bytes:
    table = struct.pack(">I", 0)
    for _ in range(depth):
        entry = b"\x01nF" + table
        table = struct.pack(">I", len(entry)) + entry
    return table


def raw_headers_only(table: bytes) -> commands.Basic.Properties:
    """No message id at all: the body's hash identifies it."""
    """Properties whose whole encoding is one header table written by hand (deeper than any encoder goes)."""

    class HeadersOnly(commands.Basic.Properties):
        def marshal(self) -> bytes:
            return struct.pack(">H", commands.Basic.Properties.flags["headers"]) + table

    return HeadersOnly()


Check = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Hostile:
    properties: dict[str, Any] = field(default_factory=dict)
    crafted: Callable[[str], commands.Basic.Properties] | None = None
    """Given the message id both deliveries share (a redelivery keeps its id)."""
    body: bytes = b"{}"
    check: Check = lambda row: None


def _check_unknown_reason(row: dict[str, Any]) -> None:
    assert row["reason"] == "error"
    assert row["headers"][h.REASON] == "gave-up"


def _check_nul(row: dict[str, Any]) -> None:
    assert (row["message_id"], row["correlation_id"], row["message_type"]) == ("id\\x00x", "c\\x00", "t\\x00")
    assert row["error_message"] == "boom\\x00"
    assert row["headers"]["k\\x00"] == "v\\x00"


def _check_too_long(row: dict[str, Any]) -> None:
    assert len(row["message_id"]) == 200
    assert row["message_id"].endswith(CUT)
    assert row["headers"][ORIGINAL_PROPERTIES]["message_id"] == "m" * 255
    assert (len(row["error_type"]), len(row["queue_name"]), len(row["service"])) == (200, 100, 100)


def _check_int_past_column(row: dict[str, Any]) -> None:
    assert row["attempts"] is None
    assert row["headers"][h.ATTEMPTS] == 2**40


def _check_broker_count_past_column(row: dict[str, Any]) -> None:
    assert (row["attempts"], row["reason"]) == (None, "rejected")


def _check_unexpected_types(row: dict[str, Any]) -> None:
    assert (row["queue_name"], row["attempts"], row["error_message"]) == ("{'a': 1}", None, "[1, 2]")
    assert datetime.now(UTC) - row["last_failed_at"] < timedelta(minutes=5)


def _check_deaths_not_a_list(row: dict[str, Any]) -> None:
    assert (row["queue_name"], row["reason"]) == ("5", "rejected")


def _check_time_past_utc(row: dict[str, Any]) -> None:
    assert datetime.now(UTC) - row["last_failed_at"] < timedelta(minutes=5)


def _check_nested_past_json(row: dict[str, Any]) -> None:
    assert "nested deeper than" in orjson.dumps(row["headers"]).decode()


def _check_nested_past_decoder(row: dict[str, Any]) -> None:
    assert list(row["headers"]) == [UNDECODABLE_PROPERTIES]
    assert row["reason"] == "rejected"


def _check_invalid_utf8_properties(row: dict[str, Any]) -> None:
    assert row["message_id"] == "id-\\xff\\xfe-12345678"
    assert row["message_type"] == "tp\\xffe-12345678"
    assert row["reason"] == "error"


def _check_invalid_utf8_header(row: dict[str, Any]) -> None:
    assert row["headers"]["k\\xffk\\xfeKK"] == "v\\xffv\\xfeVVVVVV"


def _check_no_payload_raw_kept(row: dict[str, Any]) -> None:
    assert row["payload"] is None
    assert bytes(row["raw_body"])


def _placeholder_properties(_: str) -> commands.Basic.Properties:
    return crafted(
        message_id="IDPLACEHOLDER1", message_type="TPPLACEHOLDER", headers=policy(),
        replacements=((b"IDPLACEHOLDER1", b"id-\xff\xfe-12345678"), (b"TPPLACEHOLDER", b"tp\xffe-12345678")),
    )  # fmt: skip


HOSTILE = {
    "unknown-reason": Hostile({"headers": policy(**{h.REASON: "gave-up"})}, check=_check_unknown_reason),
    "nul-in-properties-and-headers": Hostile(
        {
            "message_id": "id\x00x",
            "correlation_id": "c\x00",
            "type": "t\x00",
            "headers": policy(**{"k\x00": "v\x00", h.ERROR_MESSAGE: "boom\x00"}),
        },
        check=_check_nul,
    ),
    "longer-than-their-columns": Hostile(
        {"message_id": "m" * 255, "headers": policy("q" * 300, **{h.ERROR_TYPE: "T" * 5_000, h.SERVICE: "s" * 300})},
        check=_check_too_long,
    ),
    "integers-past-their-columns": Hostile({"headers": policy(**{h.ATTEMPTS: 2**40})}, check=_check_int_past_column),
    "broker-counts-past-their-columns": Hostile(
        {
            "headers": {
                "x-death": [{"queue": "hostile", "reason": "rejected", "count": 2**62}],
                "x-delivery-count": 2**62,
            }
        },
        check=_check_broker_count_past_column,
    ),
    "values-of-unexpected-types": Hostile(
        {
            "headers": policy(
                **{h.ORIGINAL_QUEUE: {"a": 1}, h.LAST_FAILURE_AT: 12345, h.ATTEMPTS: "4", h.ERROR_MESSAGE: [1, 2]}
            )
        },
        check=_check_unexpected_types,
    ),
    "deaths-that-are-not-a-list": Hostile(
        {"headers": {"x-death": "nope", "x-first-death-queue": 5}}, check=_check_deaths_not_a_list
    ),
    "times-past-utc": Hostile(
        {"headers": policy(**{h.LAST_FAILURE_AT: "9999-12-31T23:59:59-14:00"})}, check=_check_time_past_utc
    ),
    "headers-nested-past-json": Hostile({"headers": policy(deep=nested(100))}, check=_check_nested_past_json),
    "headers-nested-past-the-decoder": Hostile(
        crafted=lambda _: raw_headers_only(nested_table_bytes(3_000)), check=_check_nested_past_decoder
    ),
    "properties-not-utf8": Hostile(crafted=_placeholder_properties, check=_check_invalid_utf8_properties),
    "header-name-and-value-not-utf8": Hostile(
        crafted=lambda message_id: crafted(
            message_id=message_id,
            headers=policy(KEYKEY="VALUEVALUE"),
            replacements=((b"KEYKEY", b"k\xffk\xfeKK"), (b"VALUEVALUE", b"v\xffv\xfeVVVVVV")),
        ),
        check=_check_invalid_utf8_header,
    ),
    "json-deeper-than-the-encoder": Hostile(
        {"headers": policy()}, body=b"[" * 300 + b"]" * 300, check=_check_no_payload_raw_kept
    ),
    "body-not-utf8": Hostile({"headers": policy()}, body=b"\xff\xfe\x00 not json", check=_check_no_payload_raw_kept),
}


@pytest.mark.parametrize("case", HOSTILE.values(), ids=HOSTILE.keys())
async def test_every_hostile_dead_letter_is_recorded_exactly_once(dlq: DlqService, case: Hostile) -> None:
    token = uuid.uuid4().hex.encode()
    # Unique per run, so the row is found by its raw body; the case's own body keeps its shape around it.
    body = case.body + b" " + token if case.body.startswith((b"[", b"\xff")) else b'{"token": "' + token + b'"}'
    parked_before = await dlq.parked_depth()
    message_id = f"hostile-{token.decode()}"
    properties = case.crafted(message_id) if case.crafted is not None else None
    for _ in range(2):  # the second delivery is a redelivery (same id): it must not make a second row
        if properties is not None:
            await dlq.publish_crafted(body, properties)
        else:
            await dlq.publish(body, **({"message_id": message_id} | case.properties))
    marker = b'{"marker": "' + uuid.uuid4().hex.encode() + b'"}'
    await dlq.publish(marker, message_id=f"marker-{token.decode()}", headers=policy())
    await dlq.recorded(marker)

    rows = await dlq.rows_with_body(body)
    assert len(rows) == 1
    assert bytes(rows[0]["raw_body"]) == body
    case.check(rows[0])
    assert await dlq.parked_depth() == parked_before


async def test_two_dead_letters_with_unknown_reasons_are_two_entries_not_one_duplicate(dlq: DlqService) -> None:
    bodies = [b'{"unknown": "' + uuid.uuid4().hex.encode() + b'"}' for _ in range(2)]
    for body, reason in zip(bodies, ("gave-up", "shrug"), strict=True):
        await dlq.publish(body, message_id=f"unknown-{uuid.uuid4().hex}", headers=policy(**{h.REASON: reason}))
    for body in bodies:
        assert (await dlq.recorded(body))["reason"] == "error"


@dataclass
class RefusingTrigger:
    """PostgreSQL refusing every row for one queue, as it would a value our coercion missed."""

    engine: AsyncEngine
    queue: str
    name: str = field(default_factory=lambda: f"refuse_{uuid.uuid4().hex[:8]}")

    async def __aenter__(self) -> RefusingTrigger:
        async with self.engine.begin() as connection:
            await connection.execute(text(
                f"CREATE FUNCTION {self.name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.queue_name = '{self.queue}' THEN RAISE EXCEPTION 'refused by a test trigger' "
                "USING ERRCODE = '22000'; END IF; RETURN NEW; END $$"
            ))  # fmt: skip
            await connection.execute(
                text(f"CREATE TRIGGER {self.name} BEFORE INSERT ON dead_letter_queue FOR EACH ROW "
                     f"EXECUTE FUNCTION {self.name}()")
            )  # fmt: skip
        return self

    async def __aexit__(self, *_: object) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(text(f"DROP TRIGGER IF EXISTS {self.name} ON dead_letter_queue"))
            await connection.execute(text(f"DROP FUNCTION IF EXISTS {self.name}()"))


async def test_a_dead_letter_postgresql_keeps_refusing_is_parked_counted_shown_and_recorded_once_fixed(
    dlq: DlqService,
) -> None:
    queue = f"refused-{uuid.uuid4().hex[:6]}"
    refused = b'{"refused": "' + uuid.uuid4().hex.encode() + b'", "to": "ada@example.com"}'
    message_id = f"refused-{uuid.uuid4().hex}"
    neighbour = b'{"neighbour": "' + uuid.uuid4().hex.encode() + b'"}'
    async with RefusingTrigger(dlq.engine, queue):
        await dlq.publish(refused, message_id=message_id, headers=policy(queue))
        await dlq.publish(neighbour, message_id=f"n-{uuid.uuid4().hex}", headers=policy())
        await dlq.recorded(neighbour)  # capture went on past it

        assert await dlq.rows_with_body(refused) == []
        listed = (await dlq.client.get(f"{API}/dlq/parked", params={"limit": 100}, headers=dlq.admin)).json()
        [parked] = [item for item in listed["items"] if item["message_id"] == message_id]
        assert parked["queue"] == queue
        assert "refused by a test trigger" in parked["error"]
        assert parked["attempts"] == 3
        assert "ada@example.com" not in parked["payload_preview"]
        assert listed["depth"] >= 1
        metrics = (await dlq.client.get("/metrics")).text
        assert metric_value(metrics, f'fmhl_dead_letters_parked_total{{queue="{queue}"}}') == 1

    recaptured = await dlq.client.post(f"{API}/dlq/parked/recapture", json={"limit": 10_000}, headers=dlq.admin)
    assert recaptured.status_code == 202, recaptured.text
    assert recaptured.json()["sent_back"] >= 1
    entry = await dlq.recorded(refused)
    assert (entry["queue_name"], entry["message_id"]) == (queue, message_id)
    assert h.PARKED_ERROR not in entry["headers"]
    audited = await dlq.scalar("SELECT count(*) FROM audit_log WHERE action = 'dlq.parked_recaptured'")
    assert audited >= 1


async def test_dead_letters_arriving_while_postgresql_is_unreachable_are_handed_back_and_all_land_once(
    dlq: DlqService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="dlq_service")
    queue = f"outage-{uuid.uuid4().hex[:6]}"
    parked_before = await dlq.parked_depth()
    dlq.proxy.cut()
    try:
        for n in range(20):
            await dlq.publish(b'{"n": %d}' % n, message_id=f"{queue}-{n}", headers=policy(queue))

        async def handed_back() -> bool:
            # One failed batch is enough: the breaker then holds the letters unacked and probes, without retrying
            # each of them in a loop (tests/faults: "wait without a hot loop").
            return any(record.getMessage() == "dead_letter.not_recorded" for record in caplog.records)

        await eventually(handed_back, timeout=30)
    finally:
        dlq.proxy.start()

    async def all_landed() -> bool:
        return bool(await dlq.scalar("SELECT count(*) FROM dead_letter_queue WHERE queue_name = :q", q=queue) == 20)

    await eventually(all_landed, timeout=60)
    assert await dlq.scalar("SELECT count(DISTINCT message_id) FROM dead_letter_queue WHERE queue_name = :q", q=queue)
    assert await dlq.parked_depth() == parked_before


async def _entry(dlq: DlqService, queue: str = UNCONSUMED, headers: dict[str, Any] | None = None) -> tuple[str, bytes]:
    body = b'{"entry": "' + uuid.uuid4().hex.encode() + b'"}'
    await dlq.publish(
        body, message_id=f"e-{uuid.uuid4().hex}", type="test.ping", headers=policy(queue, **(headers or {}))
    )
    return str((await dlq.recorded(body))["id"]), body


async def _take_retried(dlq: DlqService, body: bytes) -> aio_pika.abc.AbstractIncomingMessage:
    """The retried message, from the queue nothing consumes here."""
    connection = await aio_pika.connect(dlq.url)
    channel = await connection.channel()
    queue = await channel.get_queue(UNCONSUMED)
    async with asyncio.timeout(15):
        while True:
            message = await queue.get(no_ack=True, fail=False)
            if message is not None and message.body == body:
                await connection.close()
                return message
            if message is None:
                await asyncio.sleep(0.05)


async def _status(dlq: DlqService, entry_id: str) -> str:
    return str(await dlq.scalar("SELECT status FROM dead_letter_queue WHERE id = :e", e=uuid.UUID(entry_id)))


async def _report_success(dlq: DlqService, entry_id: str, retry_id: int, signature: str) -> str:
    publisher, broker = await publisher_for(dlq.url)
    message_id = await publisher.publish(
        DeadLetterRetrySucceeded(
            entry_id=uuid.UUID(entry_id), retry_id=retry_id, signature=signature, queue=UNCONSUMED, message_id="m"
        )
    )
    await broker.stop()
    return message_id


async def test_a_retry_outcome_is_believed_only_with_the_services_signature_for_the_retry_in_flight(
    dlq: DlqService,
) -> None:
    entry_id, body = await _entry(dlq)
    assert (await dlq.client.post(f"{API}/dlq/{entry_id}/retry", headers=dlq.admin)).status_code == 202
    retried = await _take_retried(dlq, body)
    headers = retried.headers or {}
    retry_id, signature = headers[h.DLQ_RETRY], headers[h.DLQ_SIGNATURE]
    assert headers[h.DLQ_ENTRY] == entry_id
    assert isinstance(retry_id, int)
    assert isinstance(signature, str)

    forged = await _report_success(dlq, entry_id, retry_id, "0" * 64)

    async def forged_report_kept_as_a_dead_letter() -> bool:
        return bool(await dlq.scalar(
            "SELECT count(*) FROM dead_letter_queue WHERE message_id = :m AND error_type = 'BusinessRuleViolation'",
            m=forged,
        ))  # fmt: skip

    await eventually(forged_report_kept_as_a_dead_letter)
    assert await _status(dlq, entry_id) == "retrying"

    another_retry = dlq.signer.sign(uuid.UUID(entry_id), retry_id + 1_000)
    await _report_success(dlq, entry_id, retry_id + 1_000, another_retry)  # signed, but no such retry in flight
    await _report_success(dlq, entry_id, retry_id, signature)

    async def resolved() -> bool:
        return await _status(dlq, entry_id) == "resolved"

    await eventually(resolved)
    resolution = await dlq.scalar("SELECT resolution FROM dead_letter_queue WHERE id = :e", e=uuid.UUID(entry_id))
    assert resolution == "retry_succeeded"


async def test_a_dead_letter_names_an_entry_only_with_the_signature_of_its_retry_in_flight(dlq: DlqService) -> None:
    target, body = await _entry(dlq)
    assert (await dlq.client.post(f"{API}/dlq/{target}/retry", headers=dlq.admin)).status_code == 202
    retry_id = (await _take_retried(dlq, body)).headers[h.DLQ_RETRY]
    assert isinstance(retry_id, int)
    entry = uuid.UUID(target)
    forged = {h.DLQ_ENTRY: target, h.DLQ_RETRY: retry_id, h.DLQ_SIGNATURE: "ab" * 32}
    not_in_flight = {
        h.DLQ_ENTRY: target,
        h.DLQ_RETRY: retry_id + 1,
        h.DLQ_SIGNATURE: dlq.signer.sign(entry, retry_id + 1),
    }
    for link in (forged, not_in_flight):
        _, other = await _entry(dlq, headers=link | {h.ERROR_MESSAGE: "rewritten"})
        assert str((await dlq.recorded(other))["id"]) != target
    row = (await dlq.client.get(f"{API}/dlq/{target}", headers=dlq.admin)).json()
    assert (row["status"], row["retry_count"], row["error_message"], len(row["failures"])) == ("retrying", 0, "boom", 1)

    genuine = {h.DLQ_ENTRY: target, h.DLQ_RETRY: retry_id, h.DLQ_SIGNATURE: dlq.signer.sign(entry, retry_id)}
    await dlq.publish(body, message_id="again", headers=policy(UNCONSUMED, **genuine, **{h.ERROR_MESSAGE: "again"}))

    async def failed_again() -> bool:
        return bool(await dlq.scalar("SELECT retry_count FROM dead_letter_queue WHERE id = :e", e=entry) == 1)

    await eventually(failed_again)
    row = (await dlq.client.get(f"{API}/dlq/{target}", headers=dlq.admin)).json()
    assert (row["status"], row["error_message"], len(row["failures"])) == ("failed", "again", 2)
    assert [retry["outcome"] for retry in row["retries"]] == ["failed_again"]


async def test_a_retry_goes_back_to_the_queue_it_failed_in_never_where_its_headers_point(dlq: DlqService) -> None:
    connection = await aio_pika.connect(dlq.url)
    channel = await connection.channel()
    trap = await channel.declare_exchange(f"trap-{uuid.uuid4().hex[:6]}", aio_pika.ExchangeType.FANOUT)
    trapped = await channel.declare_queue(f"trapped-{uuid.uuid4().hex[:6]}", exclusive=True)
    await trapped.bind(trap)
    entry_id, body = await _entry(dlq, headers={h.ORIGINAL_EXCHANGE: trap.name, h.ORIGINAL_ROUTING_KEY: "anything"})

    assert (await dlq.client.post(f"{API}/dlq/{entry_id}/retry", headers=dlq.admin)).status_code == 202
    retried = await _take_retried(dlq, body)
    assert (retried.exchange, retried.routing_key) == ("", UNCONSUMED)
    assert (await channel.declare_queue(trapped.name, passive=True)).declaration_result.message_count == 0
    await trap.delete()
    await connection.close()


async def test_an_entry_from_a_queue_outside_the_topology_can_be_resolved_not_retried(dlq: DlqService) -> None:
    entry_id, _ = await _entry(dlq, queue=f"outside-{uuid.uuid4().hex[:6]}")
    refused = await dlq.client.post(f"{API}/dlq/{entry_id}/retry", headers=dlq.admin)
    assert refused.status_code == 409
    assert "not a work queue of the topology" in refused.json()["detail"]
    assert await _status(dlq, entry_id) == "failed"
    assert (await dlq.client.delete(f"{API}/dlq/{entry_id}", headers=dlq.admin)).status_code == 200
    assert await _status(dlq, entry_id) == "resolved"


async def test_lists_mask_every_address_and_phone_number_and_show_a_bounded_preview(dlq: DlqService) -> None:
    queue = f"pii-{uuid.uuid4().hex[:6]}"
    payload = {"lead": {"reach": "ada@example.com", "call": "+44 20 7946 0958"}, "run": queue, "pad": "x" * 100_000}
    body = orjson.dumps(payload)
    error = "550 5.1.1 <ada@example.com>: mailbox unavailable, call +1 415 555 0100"
    await dlq.publish(body, message_id=f"pii-{uuid.uuid4().hex}", correlation_id="bob@example.com",
                      headers=policy(queue, **{h.ERROR_MESSAGE: error}))  # fmt: skip
    entry = await dlq.recorded(body)

    [item] = (await dlq.client.get(f"{API}/dlq", params={"queue": queue}, headers=dlq.admin)).json()["items"]
    listed = orjson.dumps(item).decode()
    for secret in ("ada@example.com", "bob@example.com", "7946 0958", "555 0100"):
        assert secret not in listed
    assert item["error_message"] == "550 5.1.1 <a***@e***.com>: mailbox unavailable, call ***00"
    assert len(item["payload_preview"]) <= 300
    assert item["payload_preview"].endswith(CUT)
    assert item["body_bytes"] == len(body)
    groups = (await dlq.client.get(f"{API}/dlq/groups", headers=dlq.admin)).json()["groups"]
    assert "ada@example.com" not in orjson.dumps(groups).decode()
    detail = (await dlq.client.get(f"{API}/dlq/{entry['id']}", headers=dlq.admin)).json()
    assert detail["payload"]["lead"]["reach"] == "ada@example.com"
    assert detail["error_message"] == error


def _cursor(created: str, entry: str) -> str:
    return base64.urlsafe_b64encode(f"{created}|{entry}".encode()).decode()


BAD_INPUTS: list[tuple[str, str, dict[str, Any], int]] = [
    ("get", "/dlq", {"params": {"from": "9999-12-31T23:59:59-14:00"}}, 400),
    ("get", "/dlq", {"params": {"to": "0001-01-01T00:00:00+14:00"}}, 400),
    ("get", "/dlq", {"params": {"to": "0.5"}}, 400),
    ("get", "/dlq", {"params": {"from": "1700000000"}}, 400),
    ("get", "/dlq", {"params": {"from": "not-a-time"}}, 400),
    ("get", "/dlq", {"params": {"cursor": _cursor("9999-12-31T23:59:59-14:00", str(uuid.uuid4()))}}, 400),
    ("get", "/dlq", {"params": {"cursor": _cursor("2026-01-01T00:00:00", str(uuid.uuid4()))}}, 200),
    ("get", "/dlq", {"params": {"cursor": "%%%not-base64"}}, 400),
    ("get", "/dlq", {"params": {"cursor": _cursor("2026-01-01T00:00:00+00:00", "not-a-uuid")}}, 400),
    ("get", "/dlq", {"params": {"queue": "em\x00ail"}}, 400),
    ("get", "/dlq", {"params": {"q": "x" * 201}}, 400),
    ("get", "/dlq", {"params": {"limit": "true"}}, 400),
    ("get", "/dlq", {"params": {"limit": "101"}}, 400),
    ("get", "/dlq", {"params": {"status": "gone"}}, 400),
    ("get", "/dlq/not-a-uuid", {}, 404),
    ("get", f"/dlq/{uuid.uuid4()}", {}, 404),
    ("post", f"/dlq/{uuid.uuid4()}/retry", {}, 404),
    ("delete", f"/dlq/{uuid.uuid4()}", {}, 404),
    ("get", f"/dlq/redrives/{uuid.uuid4()}", {}, 404),
    ("get", "/dlq/parked", {"params": {"limit": "true"}}, 400),
    ("post", "/dlq/retry", {"json": {"ids": [], "rate_per_second": True}}, 400),
    ("post", "/dlq/retry", {"json": {"ids": [], "dry_run": 1}}, 400),
    ("post", "/dlq/retry", {"json": {"ids": ["not-a-uuid"]}}, 400),
    ("post", "/dlq/retry", {"json": {"filter": {"failed_from": "9999-12-31T23:59:59-14:00"}}}, 400),
    ("post", "/dlq/retry", {"json": {"filter": {"queue": "em\x00ail"}}}, 400),
    ("post", "/dlq/retry", {"json": {"ids": [], "dry_run": True}}, 202),
    ("post", "/dlq/retry", {"content": b"[" * 100_000, "headers": {"content-type": "application/json"}}, 400),
    ("post", "/dlq/retry", {"content": b'{"ids": ["\xff"]}', "headers": {"content-type": "application/json"}}, 400),
    ("post", "/dlq/retry", {"content": b'{"ids": [', "headers": {"content-type": "application/json"}}, 400),
    ("post", "/dlq/parked/recapture", {"json": {"limit": True}}, 400),
    ("post", "/dlq/parked/recapture", {"json": {"limit": 10, "extra": 1}}, 400),
]


@pytest.mark.parametrize(("method", "path", "request_kwargs", "status"), BAD_INPUTS)
async def test_no_input_to_the_admin_api_is_answered_with_a_server_error(
    dlq: DlqService, method: str, path: str, request_kwargs: dict[str, Any], status: int
) -> None:
    options = dict(request_kwargs)
    headers = dlq.admin | options.pop("headers", {})
    response = await getattr(dlq.client, method)(f"{API}{path}", headers=headers, **options)
    assert response.status_code == status, response.text
