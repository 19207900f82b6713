"""Alembic runs migrations through the same asyncpg driver the services use."""

import asyncio
import os
from pathlib import Path

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from libs.db.tables import metadata


def database_url() -> str:
    if path := os.environ.get("DATABASE_URL_FILE"):
        return Path(path).read_text().strip()
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("migrations: DATABASE_URL is required")
    return url


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        transaction_per_migration=True,
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def main() -> None:
    engine = create_async_engine(database_url())
    async with engine.connect() as connection:
        await connection.run_sync(run)
        await connection.commit()
    await engine.dispose()


asyncio.run(main())
