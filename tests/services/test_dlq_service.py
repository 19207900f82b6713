"""dlq-service: every failure captured once in PostgreSQL, and the admin API to see, group, retry, resolve."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aio_pika
import httpx
import orjson
import pytest
from sqlalchemy import text

from dlq_service.queue_stats import STATS_PENDING, QueueStats, vhost_of
from dlq_service.settings import Settings as DlqSettings
from libs.contracts import ExportReport, SendEmail
from libs.messaging import headers as h
from libs.messaging.broker import DEAD_LETTERS, EVENTS
from libs.messaging.topology import SCHEDULED_JOBS
from tests.services.conftest import Pipeline, eventually, publisher_for

pytestmark = [pytest.mark.broker, pytest.mark.database]
ADMIN_API = "/api/v1/admin/queues"


async def entry_for(pipeline: Pipeline, message_id: str, timeout: float = 15.0) -> dict[str, Any]:
    async def present() -> bool:
        return bool(await pipeline.scalar("SELECT count(*) FROM dead_letter_queue WHERE message_id = :m", m=message_id))

    await eventually(present, timeout)
    async with pipeline.engine.connect() as connection:
        row = (await connection.execute(
            text("SELECT * FROM dead_letter_queue WHERE message_id = :m"), {"m": message_id}
        )).one()  # fmt: skip
    return dict(row._mapping)


async def rows_for(pipeline: Pipeline, message_id: str) -> int:
    return int(await pipeline.scalar("SELECT count(*) FROM dead_letter_queue WHERE message_id = :m", m=message_id))


async def holds(check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    """The opposite of `eventually`: fails as soon as `check` stops holding within the window."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert await check()
        await asyncio.sleep(0.1)


def captured_outcomes(caplog: pytest.LogCaptureFixture, message_id: str) -> list[str]:
    """What the capture path logged for each delivery of one dead letter (new, failed_again, duplicate): one
    `dead_letters.received` line per committed batch, listing its letters."""
    batches = [record for record in caplog.records if record.getMessage() == "dead_letters.received"]
    entries = [entry for record in batches for entry in getattr(record, "metadata", {}).get("entries", [])]
    return sorted(entry["outcome"] for entry in entries if entry.get("message_id") == message_id)


async def test_a_failure_in_each_worker_lands_as_one_row_with_its_context(pipeline: Pipeline) -> None:
    publisher, broker = await publisher_for(pipeline.service_env["RABBITMQ_URL"])
    dist_id = f"dlq-dist-{uuid.uuid4().hex[:8]}"
    await publisher.publish_raw(
        b'{"lead_id": "nope"}', exchange=EVENTS, routing_key="lead.approved", message_id=dist_id,
        correlation_id="cid-dist-1", headers={}, message_type="lead.approved",
    )  # fmt: skip
    email_id = await publisher.publish(SendEmail(template="new_lead", to="x@refused.example", params={}))
    export_id = await publisher.publish(ExportReport(export_id=uuid.uuid4()))
    await broker.stop()

    distribution = await entry_for(pipeline, dist_id)
    assert (distribution["queue_name"], distribution["reason"]) == ("distribution", "error")
    assert distribution["error_type"] == "SchemaMismatch"
    assert distribution["correlation_id"] == "cid-dist-1"
    assert distribution["original_exchange"] == "fmhl.events"
    assert distribution["original_routing_key"] == "lead.approved"
    assert distribution["service"] == "distribution-worker"
    assert bytes(distribution["raw_body"]) == b'{"lead_id": "nope"}'
    assert distribution["payload"] == {"lead_id": "nope"}
    assert "Traceback" in distribution["stack_trace"]
    email = await entry_for(pipeline, email_id)
    assert (email["queue_name"], email["error_type"]) == ("email", "SmtpRefused")
    assert email["error_message"].startswith("550")
    export = await entry_for(pipeline, export_id)
    assert (export["queue_name"], export["error_type"]) == ("report-export", "BusinessRuleViolation")
    for message_id in (dist_id, email_id, export_id):
        assert await rows_for(pipeline, message_id) == 1


async def _broker_dead_letter(pipeline: Pipeline, *, requeue: bool) -> tuple[str, dict[str, Any]]:
    """A quorum queue whose consumer nacks (delivery limit 0) or rejects: the broker dead-letters the message.
    The queue goes only once the entry is stored: deleting it first could drop a message not yet dead-lettered."""
    queue_name = f"test-broker-dl-{uuid.uuid4().hex[:6]}"
    message_id = f"broker-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(pipeline.service_env["RABBITMQ_URL"])
    channel = await connection.channel()
    queue = await channel.declare_queue(
        queue_name, durable=True,
        arguments={"x-queue-type": "quorum", "x-dead-letter-exchange": DEAD_LETTERS.name,
                   "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish", "x-delivery-limit": 0},
    )  # fmt: skip
    await channel.default_exchange.publish(
        aio_pika.Message(b'{"n": 1}', message_id=message_id, type="test.ping", delivery_mode=2), routing_key=queue_name
    )
    async with queue.iterator() as messages:
        async for message in messages:
            if requeue:
                await message.nack(requeue=True)
            else:
                await message.reject(requeue=False)
            break
    entry = await entry_for(pipeline, message_id)
    await queue.delete(if_unused=False, if_empty=False)
    await connection.close()
    return queue_name, entry


@pytest.mark.parametrize(("requeue", "reason"), [(True, "delivery_limit"), (False, "rejected")])
async def test_a_broker_dead_letter_lands_with_its_reason(pipeline: Pipeline, requeue: bool, reason: str) -> None:
    queue_name, entry = await _broker_dead_letter(pipeline, requeue=requeue)
    assert entry["reason"] == reason
    assert entry["queue_name"] == queue_name
    assert entry["error_message"] == f"dead-lettered by the broker: {reason}"


def policy_headers(queue: str, failed_at: str, **extra: Any) -> dict[str, Any]:
    headers = {h.REASON: "error", h.ORIGINAL_QUEUE: queue, h.ORIGINAL_EXCHANGE: "", h.ORIGINAL_ROUTING_KEY: queue,
               h.ERROR_TYPE: "ValueError", h.ERROR_MESSAGE: "boom 42", h.ATTEMPTS: 4, h.SERVICE: "test",
               h.FIRST_FAILURE_AT: failed_at, h.LAST_FAILURE_AT: failed_at}  # fmt: skip
    return headers | {h.ERROR_STACK: "Traceback ..."} | extra


async def publish_dead_letters(rabbitmq_url: str, queue: str, count: int, prefix: str) -> list[str]:
    connection = await aio_pika.connect(rabbitmq_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(DEAD_LETTERS.name)
    ids = []
    for index in range(count):
        message_id = f"{prefix}-{index}"
        failed_at = datetime.now(UTC).isoformat()
        body = orjson.dumps({"n": index, "contact": {"email": "ada@example.com", "name": "Ada", "phone": "+1 555"}})
        await exchange.publish(
            aio_pika.Message(body, message_id=message_id, type="test.ping", delivery_mode=2,
                             headers=policy_headers(queue, failed_at)), routing_key=queue,
        )  # fmt: skip
        ids.append(message_id)
    await connection.close()
    return ids


async def test_a_redelivered_dead_letter_makes_no_second_row(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dlq_service")
    connection = await aio_pika.connect(pipeline.service_env["RABBITMQ_URL"])
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(DEAD_LETTERS.name)
    headers = policy_headers("email", datetime.now(UTC).isoformat())
    message_id = f"twice-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        await exchange.publish(aio_pika.Message(b"{}", message_id=message_id, headers=headers), routing_key="email")
    await connection.close()

    async def both_deliveries_handled() -> bool:
        return bool(captured_outcomes(caplog, message_id) == ["duplicate", "new"])

    await eventually(both_deliveries_handled)
    assert await rows_for(pipeline, message_id) == 1


@pytest.mark.stack
async def test_dead_letters_arriving_while_postgresql_is_down_are_all_kept_once(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    queue = f"pgdown-{uuid.uuid4().hex[:6]}"
    version, cluster = subprocess.run(
        ["pg_lsclusters", "-h"], capture_output=True, text=True, check=True
    ).stdout.split()[:2]
    subprocess.run(["pg_ctlcluster", version, cluster, "stop", "-m", "fast"], check=True)
    try:
        await publish_dead_letters(pipeline.service_env["RABBITMQ_URL"], queue, 500, queue)

        async def handed_back() -> bool:
            return any(record.getMessage() == "dead_letter.not_recorded" for record in caplog.records)

        await eventually(handed_back, timeout=30)
    finally:
        subprocess.run(["pg_ctlcluster", version, cluster, "start"], check=True)

    async def all_kept() -> bool:
        try:
            return bool(
                await pipeline.scalar("SELECT count(*) FROM dead_letter_queue WHERE queue_name = :q", q=queue) == 500
            )
        except Exception:
            return False

    await eventually(all_kept, timeout=120)
    distinct = await pipeline.scalar(
        "SELECT count(DISTINCT message_id) FROM dead_letter_queue WHERE queue_name = :q", q=queue
    )
    assert distinct == 500


async def _refused_email(pipeline: Pipeline, domain: str) -> str:
    pipeline.mail.refused_domains.add(domain)
    publisher, broker = await publisher_for(pipeline.service_env["RABBITMQ_URL"])
    message_id = await publisher.publish(
        SendEmail(template="low_balance", to=f"p@{domain}", params={"balance_cents": 5})
    )
    await broker.stop()
    entry = await entry_for(pipeline, message_id)
    return str(entry["id"])


async def test_a_retry_after_the_cause_is_gone_resolves_the_entry_by_itself(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    domain = f"flaky-{uuid.uuid4().hex[:6]}.example"
    entry_id = await _refused_email(pipeline, domain)
    pipeline.mail.refused_domains.discard(domain)

    response = await pipeline.workers["dlq"].post(f"{ADMIN_API}/dlq/{entry_id}/retry", headers=admin)
    assert response.status_code == 202, response.text

    async def resolved() -> bool:
        detail = (await pipeline.workers["dlq"].get(f"{ADMIN_API}/dlq/{entry_id}", headers=admin)).json()
        return bool(detail["status"] == "resolved" and detail["resolution"] == "retry_succeeded")

    await eventually(resolved)
    assert len(pipeline.mail.to(f"p@{domain}")) == 1
    detail = (await pipeline.workers["dlq"].get(f"{ADMIN_API}/dlq/{entry_id}", headers=admin)).json()
    assert [retry["outcome"] for retry in detail["retries"]] == ["succeeded"]


async def test_a_retry_that_fails_again_comes_back_to_the_same_entry(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    entry_id = await _refused_email(pipeline, f"dead-{uuid.uuid4().hex[:6]}.example")
    response = await pipeline.workers["dlq"].post(f"{ADMIN_API}/dlq/{entry_id}/retry", headers=admin)
    assert response.status_code == 202

    async def failed_again() -> bool:
        detail = (await pipeline.workers["dlq"].get(f"{ADMIN_API}/dlq/{entry_id}", headers=admin)).json()
        return bool(detail["status"] == "failed" and detail["retry_count"] == 1)

    await eventually(failed_again)
    detail = (await pipeline.workers["dlq"].get(f"{ADMIN_API}/dlq/{entry_id}", headers=admin)).json()
    assert len(detail["failures"]) == 2
    assert [retry["outcome"] for retry in detail["retries"]] == ["failed_again"]
    assert await pipeline.scalar("SELECT count(*) FROM dead_letter_queue WHERE message_id = :m",
                                 m=detail["message_id"]) == 1  # fmt: skip


async def test_two_concurrent_retries_of_one_entry_publish_once(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    domain = f"double-{uuid.uuid4().hex[:6]}.example"
    entry_id = await _refused_email(pipeline, domain)
    pipeline.mail.refused_domains.discard(domain)
    first, second = await asyncio.gather(
        pipeline.workers["dlq"].post(f"{ADMIN_API}/dlq/{entry_id}/retry", headers=admin),
        pipeline.workers["dlq"].post(f"{ADMIN_API}/dlq/{entry_id}/retry", headers=admin),
    )
    assert sorted([first.status_code, second.status_code]) == [202, 409]

    async def resolved_by_its_retry() -> bool:
        status = await pipeline.scalar("SELECT status FROM dead_letter_queue WHERE id = :e", e=uuid.UUID(entry_id))
        return bool(status == "resolved")

    await eventually(resolved_by_its_retry)
    assert len(pipeline.mail.to(f"p@{domain}")) == 1
    assert (
        await pipeline.scalar("SELECT count(*) FROM dead_letter_retries WHERE entry_id = :e", e=uuid.UUID(entry_id))
        == 1
    )


async def redrive_progress(pipeline: Pipeline, admin: dict[str, str], redrive_id: str) -> dict[str, Any]:
    response = await pipeline.workers["dlq"].get(f"{ADMIN_API}/dlq/redrives/{redrive_id}", headers=admin)
    assert response.status_code == 200, response.text
    return dict(response.json())


UNCONSUMED = SCHEDULED_JOBS.name
"""A work queue of the topology that nothing consumes in these tests (the pipeline runs no scheduler): what a
redrive sends there stays countable. Purged before and after each test that uses it."""


async def _unconsumed_group(pipeline: Pipeline, count: int) -> tuple[str, aio_pika.abc.AbstractQueue, Any]:
    """`count` failed entries of one group whose retries land in a queue nobody consumes."""
    connection = await aio_pika.connect(pipeline.service_env["RABBITMQ_URL"])
    channel = await connection.channel()
    unconsumed = await channel.get_queue(UNCONSUMED)
    await unconsumed.purge()
    fingerprint = uuid.uuid4().hex
    async with pipeline.engine.begin() as db:
        await db.execute(
            text(
                "INSERT INTO dead_letter_queue (queue_name, message_id, failed_at, first_failed_at, last_failed_at, "
                "original_exchange, original_routing_key, raw_body, fingerprint, error_type, error_message, "
                "message_type, content_type) SELECT :q, :prefix || g, now(), now(), now(), '', :rk, '\\x7b7d', :f, "
                "'ValueError', 'parked', 'test.ping', 'application/json' FROM generate_series(1, :n) g"
            ),
            {"q": UNCONSUMED, "prefix": f"{fingerprint}-", "rk": UNCONSUMED, "f": fingerprint, "n": count},
        )
    return fingerprint, unconsumed, connection


async def test_bulk_retry_by_group_runs_at_the_asked_rate_reports_progress_and_finishes(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    fingerprint, unconsumed, connection = await _unconsumed_group(pipeline, 500)
    group = {"group": {"queue": UNCONSUMED, "fingerprint": fingerprint}}
    dry = await pipeline.workers["dlq"].post(f"{ADMIN_API}/dlq/retry", json=group | {"dry_run": True}, headers=admin)
    assert dry.json()["selected"] == 500
    assert dry.json()["redrive_id"] is None

    started = time.monotonic()
    response = await pipeline.workers["dlq"].post(
        f"{ADMIN_API}/dlq/retry", json=group | {"rate_per_second": 50}, headers=admin
    )
    assert response.status_code == 202, response.text
    redrive_id = response.json()["redrive_id"]
    progress: dict[str, Any] = {}

    async def a_fifth_sent() -> bool:
        progress.update(await redrive_progress(pipeline, admin, redrive_id))
        return bool(progress["sent"] >= 100)

    await eventually(a_fifth_sent)
    # The first message goes at once, then one every 1/50 s: 100 cannot be out in less than 99/50 s.
    assert time.monotonic() - started >= 99 / 50
    assert progress["status"] == "running"
    assert progress["sent"] < 500

    async def completed() -> bool:
        progress.update(await redrive_progress(pipeline, admin, redrive_id))
        return bool(progress["status"] == "completed")

    await eventually(completed, timeout=30)
    elapsed = time.monotonic() - started
    final = await redrive_progress(pipeline, admin, redrive_id)
    assert (final["selected"], final["sent"], final["failed"]) == (500, 500, 0)
    assert 8 <= elapsed <= 25, elapsed
    declared = await unconsumed.declare()
    assert declared.message_count == 500
    await unconsumed.purge()
    await connection.close()


async def test_a_bulk_retry_can_be_cancelled_midway_and_new_failures_are_not_swept_in(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    fingerprint, unconsumed, connection = await _unconsumed_group(pipeline, 200)
    group = {"group": {"queue": UNCONSUMED, "fingerprint": fingerprint}, "rate_per_second": 20}
    redrive_id = (await pipeline.workers["dlq"].post(f"{ADMIN_API}/dlq/retry", json=group, headers=admin)).json()[
        "redrive_id"
    ]
    await _unconsumed_group_more(pipeline, fingerprint)

    async def some_sent() -> bool:
        return bool((await redrive_progress(pipeline, admin, redrive_id))["sent"] >= 10)

    await eventually(some_sent)
    cancelled = await pipeline.workers["dlq"].post(f"{ADMIN_API}/dlq/redrives/{redrive_id}/cancel", headers=admin)
    assert cancelled.json()["status"] == "cancelled"
    sent = (await redrive_progress(pipeline, admin, redrive_id))["sent"]

    async def stopped() -> bool:
        # Only the message in flight when the cancel landed may still be counted.
        return bool((await redrive_progress(pipeline, admin, redrive_id))["sent"] <= sent + 1)

    await holds(stopped, seconds=1.5)  # 30 sending intervals at 20 per second
    after = await redrive_progress(pipeline, admin, redrive_id)
    assert after["status"] == "cancelled"
    assert after["selected"] == 200
    assert 10 <= after["sent"] <= sent + 1 < 200
    await unconsumed.purge()
    await connection.close()


async def _unconsumed_group_more(pipeline: Pipeline, fingerprint: str) -> None:
    async with pipeline.engine.begin() as db:
        await db.execute(
            text(
                "INSERT INTO dead_letter_queue (queue_name, message_id, failed_at, raw_body, fingerprint) "
                "SELECT :q, 'late-' || g, now(), '\\x7b7d', :f FROM generate_series(1, 50) g"
            ),
            {"q": UNCONSUMED, "f": fingerprint},
        )


async def test_the_list_is_stable_under_keyset_pagination_while_entries_arrive(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    queue = f"paged-{uuid.uuid4().hex[:6]}"
    before = await publish_dead_letters(pipeline.service_env["RABBITMQ_URL"], queue, 30, queue)

    async def thirty() -> bool:
        return bool(
            await pipeline.scalar("SELECT count(*) FROM dead_letter_queue WHERE queue_name = :q", q=queue) == 30
        )

    await eventually(thirty)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"queue": queue, "limit": 7} | ({"cursor": cursor} if cursor else {})
        page = (await pipeline.workers["dlq"].get(f"{ADMIN_API}/dlq", params=params, headers=admin)).json()
        seen += [item["message_id"] for item in page["items"]]
        await publish_dead_letters(pipeline.service_env["RABBITMQ_URL"], queue, 3, f"{queue}-late-{len(seen)}")
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert set(before) <= set(seen)


async def test_the_list_shows_a_masked_bounded_preview_and_the_detail_shows_everything(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    queue = f"masked-{uuid.uuid4().hex[:6]}"
    [message_id] = await publish_dead_letters(pipeline.service_env["RABBITMQ_URL"], queue, 1, queue)
    entry = await entry_for(pipeline, message_id)
    listed = (await pipeline.workers["dlq"].get(f"{ADMIN_API}/dlq", params={"queue": queue}, headers=admin)).json()
    [item] = listed["items"]
    assert "payload" not in item
    assert item["payload_preview"] == '{"n": 0, "contact": {"name": "A***", "email": "a***@e***.com", "phone": "+***"}}'
    assert item["body_bytes"] == len(bytes(entry["raw_body"]))
    detail = (await pipeline.workers["dlq"].get(f"{ADMIN_API}/dlq/{entry['id']}", headers=admin)).json()
    assert detail["payload"]["contact"]["email"] == "ada@example.com"


async def test_filters_combine_with_and_and_free_text_searches_message_and_payload(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    queue = f"search-{uuid.uuid4().hex[:6]}"
    await publish_dead_letters(pipeline.service_env["RABBITMQ_URL"], queue, 3, queue)

    async def three() -> bool:
        return bool(await pipeline.scalar("SELECT count(*) FROM dead_letter_queue WHERE queue_name = :q", q=queue) == 3)

    await eventually(three)
    found = await pipeline.workers["dlq"].get(
        f"{ADMIN_API}/dlq", params={"queue": queue, "q": "boom ada@example", "reason": "error"}, headers=admin
    )
    assert len(found.json()["items"]) == 3
    none = await pipeline.workers["dlq"].get(
        f"{ADMIN_API}/dlq", params={"queue": queue, "q": "boom nothing-like-this"}, headers=admin
    )
    assert none.json()["items"] == []
    groups = (await pipeline.workers["dlq"].get(f"{ADMIN_API}/dlq/groups", headers=admin)).json()["groups"]
    mine = [group for group in groups if group["queue"] == queue]
    assert len(mine) == 1
    assert mine[0]["count"] == 3
    assert mine[0]["sample_error"] == "boom 42"


async def test_resolving_marks_who_and_when_and_every_action_is_audited(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    queue = f"resolve-{uuid.uuid4().hex[:6]}"
    [message_id] = await publish_dead_letters(pipeline.service_env["RABBITMQ_URL"], queue, 1, queue)
    entry_id = str((await entry_for(pipeline, message_id))["id"])
    await pipeline.workers["dlq"].get(f"{ADMIN_API}/dlq/{entry_id}", headers=admin)
    resolved = await pipeline.workers["dlq"].delete(f"{ADMIN_API}/dlq/{entry_id}", headers=admin)
    assert resolved.status_code == 200
    retry_resolved = await pipeline.workers["dlq"].post(f"{ADMIN_API}/dlq/{entry_id}/retry", headers=admin)
    assert retry_resolved.status_code == 409
    detail = (await pipeline.workers["dlq"].get(f"{ADMIN_API}/dlq/{entry_id}", headers=admin)).json()
    assert detail["status"] == "resolved"
    assert detail["resolved_by"] is not None
    assert detail["resolution"] == "manual"
    async with pipeline.engine.connect() as connection:
        actions = (await connection.execute(
            text("SELECT action FROM audit_log WHERE entity_id = :id ORDER BY id"), {"id": entry_id}
        )).scalars().all()  # fmt: skip
    assert actions == ["dlq.entry_viewed", "dlq.entry_resolved", "dlq.entry_viewed"]


async def test_retry_outcomes_are_taken_a_few_at_a_time_while_capture_takes_two_batches(pipeline: Pipeline) -> None:
    # Each outcome handler holds a database connection: the broker's count of what each consumer may hold unacked is
    # what bounds them, so a large redrive's successes cannot take the pool from capture and the admin API.
    env = pipeline.service_env
    consumers_url = f"{env['RABBITMQ_MANAGEMENT_URL']}/api/consumers/{quote(vhost_of(env['RABBITMQ_URL']), safe='')}"
    prefetch: dict[str, set[int]] = {}

    async def both_consuming() -> bool:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(consumers_url)
        answer.raise_for_status()
        prefetch.clear()
        for consumer in answer.json():
            prefetch.setdefault(consumer["queue"]["name"], set()).add(consumer["prefetch_count"])
        return {"dlq", "dlq-outcomes"} <= prefetch.keys()

    await eventually(both_consuming)
    defaults = DlqSettings.model_fields
    assert prefetch["dlq-outcomes"] == {defaults["outcomes_prefetch"].default} == {5}
    # Other tests' dlq-service processes may be consuming too, with a PREFETCH of their own.
    assert defaults["prefetch"].default == 400
    assert defaults["prefetch"].default in prefetch["dlq"]


async def test_queues_overview_names_every_queue_and_is_rate_limited(pipeline: Pipeline) -> None:
    admin = await pipeline.admin_headers()
    overview = (await pipeline.workers["dlq"].get(ADMIN_API, headers=admin)).json()["queues"]
    names = [queue["name"] for queue in overview]
    assert names == ["distribution", "email", "report-export", "dlq-outcomes", "scheduled-jobs", "dlq", "dlq.parking"]
    for queue in overview:
        assert {
            "depth",
            "active",
            "consumers",
            "failed_last_hour",
            "dlq_size",
            "oldest_unresolved_age_s",
        } <= queue.keys()
    assert overview[1]["consumers"] >= 1
    responses = [await pipeline.workers["dlq"].get(ADMIN_API, headers=admin) for _ in range(70)]
    # 60 a minute per admin, the overview above included: 59 more pass, every later one is refused.
    assert [response.status_code for response in responses] == [200] * 59 + [429] * 11
    assert 1 <= int(responses[-1].headers["Retry-After"]) <= 60


async def test_queue_numbers_the_broker_has_not_published_are_unknown_not_zero(pipeline: Pipeline) -> None:
    # The body a freshly started RabbitMQ 3.10 gives for a queue before its first statistics collection.
    fresh = httpx.MockTransport(lambda _: httpx.Response(200, json={"name": "email", "type": "quorum"}))
    _, broker = await publisher_for(pipeline.service_env["RABBITMQ_URL"])
    stats = QueueStats(broker, "http://user:secret@127.0.0.1:15672", "fmhl-test", 5.0, 2.0)
    async with httpx.AsyncClient(transport=fresh) as client:
        numbers = await stats.for_queue(client, "email")
    await broker.stop()
    assert numbers.active is None
    assert numbers.error == STATS_PENDING
    # Ready depth and consumers come from the queue itself and are known at once.
    assert isinstance(numbers.depth, int)
    assert numbers.consumers is not None
    assert numbers.consumers >= 1


@pytest.mark.parametrize(
    ("kind", "status"),
    [("none", 401), ("expired", 401), ("forged", 401), ("alg-none", 401), ("no-mfa", 403), ("provider", 403)],
)
async def test_the_admin_api_refuses_whoever_is_not_an_admin_with_mfa(
    pipeline: Pipeline, kind: str, status: int
) -> None:
    from libs.auth import Principal
    from tests.services.test_auth import admin, tokens

    token = {
        "none": None,
        "expired": tokens().issue(admin(), now=time.time() - 3600),
        "forged": tokens("another-signing-key-that-is-long-enough").issue(admin()),
        "alg-none": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + tokens().issue(admin()).split(".")[1] + ".",
        "no-mfa": tokens().issue(admin(amr=("pwd",))),
        "provider": tokens().issue(Principal(str(uuid.uuid4()), "provider", uuid.uuid4(), ("pwd", "otp"))),
    }[kind]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    entry = uuid.uuid4()
    routes = [("get", ADMIN_API), ("get", f"{ADMIN_API}/dlq"), ("get", f"{ADMIN_API}/dlq/groups"),
              ("post", f"{ADMIN_API}/dlq/{entry}/retry"), ("delete", f"{ADMIN_API}/dlq/{entry}")]  # fmt: skip
    for method, path in routes:
        response = await getattr(pipeline.workers["dlq"], method)(path, headers=headers)
        assert response.status_code == status, (method, path, response.text)


async def test_the_dlq_size_gauge_counts_unresolved_entries_per_queue(pipeline: Pipeline) -> None:
    queue = f"gauge-{uuid.uuid4().hex[:6]}"
    await publish_dead_letters(pipeline.service_env["RABBITMQ_URL"], queue, 4, queue)

    async def counted() -> bool:
        metrics = await pipeline.metrics(pipeline.workers["dlq"])
        return f'fmhl_dlq_size{{queue="{queue}"}} 4.0' in metrics

    await eventually(counted)
    metrics = await pipeline.metrics(pipeline.workers["dlq"])
    assert f'fmhl_dead_letters_received_total{{queue="{queue}",reason="error"}} 4.0' in metrics
