"""The models in libs/db/tables and the Alembic migrations describe one schema: any drift fails here.

Alembic's autogenerate comparison covers tables, columns, types, nullability, server defaults, indexes, unique
and foreign keys; it does not compare CHECK constraints or partial-index predicates, so the models are also
created into a scratch schema and every constraint and index definition is compared as PostgreSQL prints it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from libs.db.tables import metadata

ROOT = Path(__file__).resolve().parents[3]
MODEL_SCHEMA = "models_created"


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


@pytest.fixture(scope="module")
def migrated_from_scratch(schema_database_url: str) -> str:
    for step in (("downgrade", "base"), ("upgrade", "head")):
        result = alembic(schema_database_url, *step)
        assert result.returncode == 0, result.stderr
    return schema_database_url


@pytest.fixture
async def engine(migrated_from_scratch: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(migrated_from_scratch)
    yield engine
    await engine.dispose()


def test_a_freshly_migrated_database_matches_the_models(migrated_from_scratch: str) -> None:
    result = alembic(migrated_from_scratch, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No new upgrade operations detected" in result.stdout + result.stderr


async def _definitions(connection: AsyncConnection, schema: str) -> dict[str, set[str]]:
    # With the schema on the search path PostgreSQL prints names unqualified, so both schemas compare equal;
    # public stays on it for the extensions installed there (pg_trgm's operator classes).
    await connection.execute(text(f"SET LOCAL search_path TO {schema}, public"))
    constraints = await connection.execute(
        text(
            "SELECT c.conrelid::regclass::text AS tab, c.conname, pg_get_constraintdef(c.oid) AS definition "
            "FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = :schema"
        ),
        {"schema": schema},
    )
    indexes = await connection.execute(
        text("SELECT tablename AS tab, indexname, indexdef FROM pg_indexes WHERE schemaname = :schema"),
        {"schema": schema},
    )
    qualified = re.compile(rf"\b{schema}\.")
    return {
        "constraints": {f"{row.tab}.{row.conname}: {row.definition}" for row in constraints},
        "indexes": {f"{row.tab}.{row.indexname}: {qualified.sub('', row.indexdef)}" for row in indexes},
    }


async def test_every_constraint_and_index_of_the_migrations_is_declared_by_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text(f"DROP SCHEMA IF EXISTS {MODEL_SCHEMA} CASCADE"))
        await connection.execute(text(f"CREATE SCHEMA {MODEL_SCHEMA}"))
        modelled = await connection.execution_options(schema_translate_map={None: MODEL_SCHEMA})
        await modelled.run_sync(metadata.create_all)
        from_models = await _definitions(connection, MODEL_SCHEMA)
        await connection.rollback()
    async with engine.connect() as connection:
        migrated = await _definitions(connection, "public")
        await connection.rollback()
    migrated["constraints"] = {line for line in migrated["constraints"] if not line.startswith("alembic_version.")}
    migrated["indexes"] = {line for line in migrated["indexes"] if not line.startswith("alembic_version.")}
    assert len(migrated["constraints"]) > 60
    assert from_models["constraints"] == migrated["constraints"]
    assert from_models["indexes"] == migrated["indexes"]


def test_every_status_and_reason_column_holds_the_values_of_an_enum() -> None:
    enum_like = {"status", "reason", "kind", "role", "state", "outcome", "trigger", "resolution", "paused_reason"}
    free_text = {("bad_lead_reports", "reason")}  # the provider's own words
    plain = [
        f"{table.name}.{column.name}"
        for table in metadata.tables.values()
        for column in table.columns
        if column.name in enum_like
        and (table.name, column.name) not in free_text
        and getattr(column.type, "enum_class", None) is None
    ]
    assert plain == []
