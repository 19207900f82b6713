"""The schema: migrations apply idempotently, the plan's DLQ table is there column for column, money is cents."""

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

ROOT = Path(__file__).resolve().parents[3]


def alembic(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    yield connection
    await connection.close()


def test_migrations_go_down_and_up_again_and_a_second_upgrade_changes_nothing(database_url: str) -> None:
    for step in (("downgrade", "base"), ("upgrade", "head"), ("upgrade", "head")):
        result = alembic(database_url, *step)
        assert result.returncode == 0, result.stderr
    assert "(head)" in alembic(database_url, "current").stdout


async def test_dead_letter_queue_has_the_plan_columns(connection: asyncpg.Connection) -> None:
    rows = await connection.fetch(
        "SELECT column_name, data_type, column_default, is_nullable FROM information_schema.columns "
        "WHERE table_name = 'dead_letter_queue'"
    )
    columns = {row["column_name"]: row for row in rows}
    plan = {
        "id": "uuid",
        "queue_name": "character varying",
        "job_id": "character varying",
        "payload": "jsonb",
        "error_message": "text",
        "stack_trace": "text",
        "attempts": "integer",
        "failed_at": "timestamp with time zone",
        "resolved": "boolean",
        "resolved_at": "timestamp with time zone",
        "resolved_by": "uuid",
        "created_at": "timestamp with time zone",
    }
    for name, data_type in plan.items():
        assert columns[name]["data_type"] == data_type, name
    assert columns["id"]["column_default"] == "gen_random_uuid()"
    assert columns["failed_at"]["is_nullable"] == "NO"
    assert columns["raw_body"]["data_type"] == "bytea"
    for extra in ("original_exchange", "original_routing_key", "message_id", "correlation_id", "headers", "reason",
                  "error_type", "fingerprint", "retry_count", "status"):  # fmt: skip
        assert extra in columns, extra


async def test_dead_letter_queue_has_the_plan_indexes(connection: asyncpg.Connection) -> None:
    indexes = {
        row["indexname"]: row["indexdef"]
        for row in await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'dead_letter_queue'"
        )
    }
    assert "(queue_name, failed_at DESC)" in indexes["idx_dlq_queue_failed_at"]
    assert "(resolved, failed_at DESC)" in indexes["idx_dlq_resolved"]


async def test_dead_letter_arrival_times_are_kept_per_run_of_blocks_for_the_searches_windows(
    connection: asyncpg.Connection,
) -> None:
    definition = await connection.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'dead_letter_queue' AND indexname = 'idx_dlq_created_brin'"
    )
    assert "USING brin (created_at)" in definition
    assert "pages_per_range='16'" in definition
    # Summarised by VACUUM, not at each new range: at capture's rate PostgreSQL would log most requests as dropped.
    assert "autosummarize" not in definition


async def test_a_dead_letter_body_with_nul_bytes_and_invalid_utf8_is_stored_as_is(
    connection: asyncpg.Connection,
) -> None:
    body = b'{"name": "\x00"}\xff\xfe'
    stored = await connection.fetchval(
        "INSERT INTO dead_letter_queue (queue_name, failed_at, raw_body) "
        "VALUES ('email', now(), $1) RETURNING raw_body",
        body,
    )
    assert stored == body


async def test_money_is_integer_cents_everywhere(connection: asyncpg.Connection) -> None:
    rows = await connection.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public'"
    )
    cents = [row for row in rows if row["column_name"].endswith("_cents")]
    assert len(cents) >= 6
    assert {row["data_type"] for row in cents} == {"bigint"}
    assert not [row for row in rows if row["data_type"] in {"real", "double precision", "numeric", "money"}]


async def test_a_balance_can_never_go_negative(connection: asyncpg.Connection) -> None:
    provider = await connection.fetchval(
        "INSERT INTO providers (name, email, balance_cents) VALUES ('p', 'p@example.com', 100) RETURNING id"
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await connection.execute("UPDATE providers SET balance_cents = balance_cents - 101 WHERE id = $1", provider)
