"""What each service may do in PostgreSQL: its own login role, granted only the tables and operations its code uses.

The tables stay owned by the migrations' role; a service role gets SELECT/INSERT/UPDATE/DELETE per table (some
limited to columns: no service reads secrets or personal data it does not need, and only ingest-gateway and
distribution-worker may change a balance), plus USAGE on the sequence of each BIGSERIAL table it inserts into.

    python -m libs.db.grants sql [--secrets DIR] [--prefix fmhl] | psql -1 -v ON_ERROR_STOP=1 -d DB  (a superuser)
    python -m libs.db.grants apply [--secrets DIR] [--prefix fmhl]   (DATABASE_URL: a role that may create roles)
    python -m libs.db.grants show
    python -m libs.db.grants wait --service NAME   (DATABASE_URL: the service's own role; a pod's init container)

Each role's password comes from `DIR/db-<service>` (or `FMHL_SECRET_DB_<SERVICE>` without `--secrets`) and is
sent as a SCRAM verifier, never in clear. Run it
after every migration: it revokes whatever a role holds on the tables and grants the declaration again, in one
transaction, so a new table is closed to every service until it is declared here.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import enum
import hashlib
import hmac
import os
import secrets
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Table, column, func, select, table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlmodel import SQLModel

from libs.db.tables import (
    Assignment,
    AuditEntry,
    BadLeadReport,
    BalanceDiscrepancy,
    ConsoleSession,
    DeadLetter,
    DeadLetterEdit,
    DeadLetterEvent,
    DeadLetterGroupCount,
    DeadLetterRetry,
    EmailLog,
    Lead,
    LeadSource,
    LedgerEntry,
    OutboxMessage,
    ProcessedMessage,
    Provider,
    RateLimitHit,
    Redrive,
    RedriveItem,
    Refund,
    ReportExport,
    ScheduledJob,
    ScheduledJobRun,
    Subscription,
    User,
)
from libs.messaging.permissions import read_secrets


class Privilege(enum.StrEnum):
    select = "SELECT"
    insert = "INSERT"
    update = "UPDATE"
    delete = "DELETE"


SELECT, INSERT, UPDATE, DELETE = Privilege.select, Privilege.insert, Privilege.update, Privilege.delete


@dataclass(frozen=True)
class TableGrant:
    table: Table
    privileges: frozenset[Privilege]
    columns: Mapping[Privilege, tuple[str, ...]] = field(default_factory=dict)
    """Privileges limited to these columns; the others apply to the whole table."""

    @property
    def sequence(self) -> str | None:
        """The BIGSERIAL sequence an INSERT draws its id from (PostgreSQL names it <table>_<column>_seq)."""
        column = self.table.autoincrement_column
        if INSERT not in self.privileges or column is None:
            return None
        return f"{self.table.name}_{column.name}_seq"

    def allows(self, privilege: Privilege, column: str | None = None) -> bool:
        if privilege not in self.privileges:
            return False
        limited = self.columns.get(privilege)
        return limited is None or column in limited


def grant(
    model: type[SQLModel], *privileges: Privilege, reading: Iterable[Any] = (), updating: Iterable[Any] = ()
) -> TableGrant:
    """`reading`/`updating`: model attributes (`User.email`) that SELECT/UPDATE are limited to."""
    table = getattr(model, "__table__", None)
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not a table model")
    columns: dict[Privilege, tuple[str, ...]] = {}
    for privilege, attributes in ((SELECT, tuple(reading)), (UPDATE, tuple(updating))):
        if not attributes:
            continue
        if privilege not in privileges:
            raise ValueError(f"{table.name}: columns given for {privilege}, which is not granted")
        names = tuple(str(attribute.expression.name) for attribute in attributes)
        unknown = set(names) - set(table.columns.keys())
        if unknown:
            raise ValueError(f"{table.name} has no column {', '.join(sorted(unknown))}")
        columns[privilege] = names
    return TableGrant(table, frozenset(privileges), columns)


# Read from each service's code (its statements and the libs it calls: audit, ledger, ratelimit). A statement
# needs SELECT on every column it filters on or returns, UPDATE for SELECT ... FOR UPDATE, and USAGE on the id
# sequence for an insert into a BIGSERIAL table (derived). An insert without `.inline()` is sent with RETURNING of
# the generated id (SQLAlchemy reads back the primary key), so it needs SELECT on that column: libs.audit's does.
# ingest-gateway's CLI (create-user, create-lead-source) is an operator's tool and runs with the migrations' role,
# so the gateway itself cannot create users or API keys.
GRANTS: dict[str, tuple[TableGrant, ...]] = {
    "ingest-gateway": (
        # Login: a TOTP step used once, a plain TOTP secret sealed at its next use, failed attempts and the lockout;
        # never a password, an email address or a role.
        grant(
            User,
            SELECT,
            UPDATE,
            updating=[User.totp_secret, User.totp_last_used_step, User.failed_logins, User.locked_until],
        ),
        grant(LeadSource, SELECT),
        grant(Lead, SELECT, INSERT, UPDATE),
        grant(Provider, SELECT, INSERT, UPDATE, updating=[Provider.balance_cents]),
        grant(Subscription, SELECT, INSERT),
        grant(Assignment, SELECT, UPDATE),
        grant(BadLeadReport, SELECT, INSERT, UPDATE),
        grant(Refund, SELECT, INSERT),
        grant(LedgerEntry, INSERT),
        grant(ReportExport, SELECT, INSERT),
        grant(AuditEntry, SELECT, INSERT, reading=[AuditEntry.id]),
        grant(RateLimitHit, SELECT, INSERT, DELETE),
        # The outbox: staged with the rows they announce; the relay leases, reschedules and deletes them.
        grant(OutboxMessage, SELECT, INSERT, UPDATE, DELETE),
    ),
    "distribution-worker": (
        grant(Lead, SELECT, UPDATE),
        grant(LeadSource, SELECT, reading=[LeadSource.id, LeadSource.trusted]),
        grant(ProcessedMessage, SELECT, INSERT),
        grant(Subscription, SELECT, UPDATE),
        grant(Provider, SELECT, UPDATE, updating=[Provider.balance_cents]),
        grant(Assignment, SELECT, INSERT),
        grant(LedgerEntry, INSERT),
    ),
    "email-worker": (grant(EmailLog, SELECT, INSERT, UPDATE),),
    "export-worker": (
        grant(ReportExport, SELECT, UPDATE),
        grant(Assignment, SELECT),
        # The CSV has the lead's category and zip, never its contact; the requester's address, never a secret.
        grant(Lead, SELECT, reading=[Lead.id, Lead.category, Lead.zip]),
        grant(Provider, SELECT),
        grant(LedgerEntry, SELECT),
        grant(User, SELECT, reading=[User.id, User.email]),
    ),
    "dlq-service": (
        grant(DeadLetter, SELECT, INSERT, UPDATE),
        grant(DeadLetterEvent, SELECT, INSERT),
        # Kept by dead_letter_queue's triggers, which write it as their owner: the service only reads it.
        grant(DeadLetterGroupCount, SELECT),
        grant(DeadLetterRetry, SELECT, INSERT, UPDATE),
        grant(Redrive, SELECT, INSERT, UPDATE),
        grant(RedriveItem, SELECT, INSERT, UPDATE),
        # The console: the audit page reads the whole trail; its login is the gateway's (same users, lockout and
        # throttle), so it updates the same login columns; its sessions and edited bodies are its own.
        grant(AuditEntry, SELECT, INSERT),
        grant(RateLimitHit, SELECT, INSERT, DELETE),
        grant(
            User,
            SELECT,
            UPDATE,
            updating=[User.totp_secret, User.totp_last_used_step, User.failed_logins, User.locked_until],
        ),
        grant(ConsoleSession, SELECT, INSERT, UPDATE, DELETE),
        grant(DeadLetterEdit, SELECT, INSERT, DELETE),
        grant(ScheduledJobRun, SELECT),
    ),
    "scheduler": (
        grant(ScheduledJob, SELECT, INSERT, UPDATE),
        grant(ScheduledJobRun, SELECT, INSERT, UPDATE),
        grant(BalanceDiscrepancy, SELECT, INSERT),
        grant(Subscription, SELECT, UPDATE),
        grant(Provider, SELECT),
        grant(LedgerEntry, SELECT),
        # Retention cleanup: which resolved entries are old enough, never their payloads.
        grant(DeadLetter, SELECT, DELETE, reading=[DeadLetter.id, DeadLetter.status, DeadLetter.resolved_at]),
        grant(AuditEntry, SELECT, INSERT, reading=[AuditEntry.id]),
    ),
}
"""Keyed by the service's name (libs.runtime.SERVICES); a service without an entry gets no role."""


def role_name(service: str, prefix: str = "fmhl") -> str:
    return f"{prefix.replace('-', '_')}_{service.replace('-', '_')}"


def secret_name(service: str) -> str:
    """The file in the secrets directory that holds the service role's password."""
    return f"db-{service}"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def scram_sha256(password: str, iterations: int = 4096) -> str:
    """The verifier PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802/7677), so the password itself never
    reaches the server, its logs or its statistics."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}"


def role_statements(role: str, password: str) -> list[str]:
    """Creates the login role if missing (a concurrent creation is not an error) and sets its password."""
    name = _identifier(role)
    return [
        f"DO $$ BEGIN CREATE ROLE {name}; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
        f"ALTER ROLE {name} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
        f"PASSWORD {_literal(scram_sha256(password))}",
    ]


def grant_statements(role: str, grants: Iterable[TableGrant]) -> list[str]:
    """Everything the role held on tables and sequences is revoked (column privileges with their table's), then
    the declaration is granted; in the current database."""
    name = _identifier(role)
    statements = [
        f"DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO {name}', current_database()); END $$",
        f"GRANT USAGE ON SCHEMA public TO {name}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {name}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {name}",
    ]
    for table_grant in grants:
        table = _identifier(table_grant.table.name)
        whole = [privilege for privilege in Privilege if privilege in table_grant.privileges - set(table_grant.columns)]
        if whole:
            statements.append(f"GRANT {', '.join(whole)} ON TABLE {table} TO {name}")
        for privilege, columns in table_grant.columns.items():
            listed = ", ".join(_identifier(column) for column in columns)
            statements.append(f"GRANT {privilege} ({listed}) ON TABLE {table} TO {name}")
        if table_grant.sequence is not None:
            statements.append(f"GRANT USAGE ON SEQUENCE {_identifier(table_grant.sequence)} TO {name}")
    return statements


def statements(passwords: Mapping[str, str], *, prefix: str = "fmhl") -> list[str]:
    """Every service's role, password (by secret name) and grants, in the order they must run."""
    script = []
    for service, grants in GRANTS.items():
        role = role_name(service, prefix)
        script += role_statements(role, passwords[secret_name(service)])
        script += grant_statements(role, grants)
    return script


async def apply(database_url: str, passwords: Mapping[str, str], *, prefix: str = "fmhl") -> None:
    """In one transaction, so a running service never sees its grants half applied."""
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            for statement in statements(passwords, prefix=prefix):
                # Not text(): a SCRAM verifier may contain `:name`, which text() would take for a parameter.
                await connection.exec_driver_sql(statement)
    finally:
        await engine.dispose()


def table_rows() -> list[str]:
    """The declaration as Markdown table rows: service | table | privileges (columns)."""
    rows = []
    for service, grants in GRANTS.items():
        for table_grant in grants:
            privileges = []
            for privilege in Privilege:
                if privilege in table_grant.privileges:
                    columns = table_grant.columns.get(privilege)
                    privileges.append(f"{privilege} ({', '.join(columns)})" if columns else str(privilege))
            if table_grant.sequence is not None:
                privileges.append(f"USAGE on {table_grant.sequence}")
            rows.append(f"| {service} | {table_grant.table.name} | {', '.join(privileges)} |")
    return rows


PG_ATTRIBUTE = table("pg_attribute", column("attrelid"), column("attname"), column("attnum"), column("attisdropped"))
"""The catalog every role may read: the columns a table has, whatever the role may do with them."""


async def missing(connection: AsyncConnection, grants: Iterable[TableGrant]) -> list[str]:
    """What the connected role still lacks of its declaration: a table or a column the models have (the migration
    has not run), or a privilege (the provisioning has not); empty once both ran for this code."""
    lacking = []
    for table_grant in grants:
        name = f"public.{table_grant.table.name}"
        if await connection.scalar(select(func.to_regclass(name))) is None:
            lacking.append(f"table {name}")
            continue
        present = set(
            await connection.scalars(
                select(PG_ATTRIBUTE.c.attname).where(
                    PG_ATTRIBUTE.c.attrelid == func.to_regclass(name),
                    PG_ATTRIBUTE.c.attnum > 0,
                    PG_ATTRIBUTE.c.attisdropped.is_(False),
                )
            )
        )
        absent = set(table_grant.table.columns.keys()) - present
        lacking += [f"column {name}.{column_name}" for column_name in sorted(absent)]
        if absent:
            continue
        for privilege in Privilege:
            if privilege not in table_grant.privileges:
                continue
            limited = table_grant.columns.get(privilege)
            checks = (
                [func.has_table_privilege(name, str(privilege))]
                if limited is None
                else [func.has_column_privilege(name, column_name, str(privilege)) for column_name in limited]
            )
            held = [await connection.scalar(select(check)) for check in checks]
            if not all(held):
                lacking.append(f"{privilege} on {name}" + (f" ({', '.join(limited)})" if limited else ""))
        sequence = table_grant.sequence
        if sequence is not None and not await connection.scalar(select(func.has_sequence_privilege(sequence, "USAGE"))):
            lacking.append(f"USAGE on sequence {table_grant.sequence}")
    return lacking


async def wait(database_url: str, service: str, timeout_s: float, poll_s: float = 3.0) -> list[str]:
    """Polls, as the service's own role, until it holds its whole declaration; what is still missing at the
    deadline (empty: ready). A login refused counts as missing: the role is created by the provisioning."""
    engine = create_async_engine(database_url, pool_pre_ping=False)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                async with engine.connect() as connection:
                    lacking = await missing(connection, GRANTS[service])
            except (DBAPIError, OSError) as error:
                lacking = [f"a connection as the service's role ({type(error).__name__})"]
            if not lacking or time.monotonic() > deadline:
                return lacking
            print(f"waiting for the migration and the provisioning: {'; '.join(lacking[:3])}", file=sys.stderr)
            await asyncio.sleep(poll_s)
    finally:
        await engine.dispose()


def _passwords(directory: Path | None) -> dict[str, str]:
    return read_secrets(directory, (secret_name(service) for service in GRANTS))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m libs.db.grants", description=__doc__)
    parser.add_argument("command", choices=["sql", "apply", "show", "wait"])
    parser.add_argument("--secrets", type=Path, help="directory of password files (else FMHL_SECRET_<NAME>)")
    parser.add_argument("--prefix", default="fmhl", help="role names are <prefix>_<service>")
    parser.add_argument("--service", choices=sorted(GRANTS), help="wait: the service whose declaration to wait for")
    parser.add_argument("--timeout", type=float, default=600.0, help="wait: seconds before giving up (exit 1)")
    arguments = parser.parse_args(argv)
    if arguments.command == "show":
        print("\n".join(table_rows()))
        return
    if arguments.command == "wait":
        if arguments.service is None or not os.environ.get("DATABASE_URL"):
            raise SystemExit("wait needs --service and DATABASE_URL (the service's own role)")
        lacking = asyncio.run(wait(os.environ["DATABASE_URL"], arguments.service, arguments.timeout))
        if lacking:
            raise SystemExit(f"still missing after {arguments.timeout:g} s: {'; '.join(lacking)}")
        print(f"{role_name(arguments.service, arguments.prefix)}: migrated and provisioned", file=sys.stderr)
        return
    passwords = _passwords(arguments.secrets)
    if arguments.command == "sql":
        print(";\n".join(statements(passwords, prefix=arguments.prefix)) + ";")
        return
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        raise SystemExit("DATABASE_URL is required: a role that may create roles and grant on the tables")
    asyncio.run(apply(database_url, passwords, prefix=arguments.prefix))
    print(f"database roles provisioned: {', '.join(role_name(s, arguments.prefix) for s in GRANTS)}", file=sys.stderr)


if __name__ == "__main__":
    main()
