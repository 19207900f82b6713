"""Operator commands: create users (an admin gets its otpauth:// URI) and lead-source API keys, unlock a locked
account, seal TOTP secrets stored before sealing.

python -m ingest_gateway.cli create-user --email a@x.io --role admin --password-file pw.txt
python -m ingest_gateway.cli create-user --email a@x.io --role admin --password-file - < pw.txt   (standard input)
python -m ingest_gateway.cli create-user --email p@x.io --role provider --provider-id UUID --password-file pw.txt
python -m ingest_gateway.cli create-lead-source --name "Acme forms" [--trusted]
python -m ingest_gateway.cli unlock-user --email a@x.io
python -m ingest_gateway.cli seal-totp-secrets
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import uuid
from pathlib import Path

from pydantic import Field

from ingest_gateway.accounts import create_lead_source, create_user, seal_plain_secrets, unlock
from libs.auth import TotpSecrets, TotpSettingsMixin, totp_uri
from libs.db import create_engine
from libs.db.tables import UserRole
from libs.settings import ServiceSettings, load_or_exit

# The account functions stay importable from here: operators' scripts and the tests seed through them.
__all__ = ["create_lead_source", "create_user", "main"]

STANDARD_INPUT = "-"
"""`--password-file -`: the password is piped in, as `docker compose exec -T` and `kubectl exec -i` pass it
without a file in the container."""


class CliSettings(TotpSettingsMixin, ServiceSettings):
    service_name: str = "ingest-gateway-cli"
    http_port: int = Field(1, description="Unused by the CLI.")


def operator() -> str:
    """The audit actor of a CLI command: whoever runs it on the host."""
    try:
        return f"cli:{getpass.getuser()}"
    except OSError:
        return "cli"


async def run(arguments: argparse.Namespace, password: str | None) -> int:
    settings = load_or_exit(CliSettings)
    engine = create_engine(settings)
    totp = TotpSecrets.from_settings(settings)
    try:
        if arguments.command == "create-user":
            assert password is not None
            with_totp = arguments.role == UserRole.admin or arguments.totp
            user_id, secret = await create_user(
                engine, arguments.email, arguments.role, password, arguments.provider_id, with_totp, totp=totp
            )
            print(f"user_id={user_id}")
            if secret is not None:
                print(f"otpauth_uri={totp_uri(secret, arguments.email)}")
        elif arguments.command == "create-lead-source":
            source_id, api_key = await create_lead_source(engine, arguments.name, arguments.trusted)
            print(f"lead_source_id={source_id}")
            print(f"api_key={api_key}")
        elif arguments.command == "unlock-user":
            unlocked = await unlock(engine, arguments.email, operator())
            if unlocked is None:
                print(f"no user with email {arguments.email}")
                return 1
            print(f"unlocked user_id={unlocked}")
        else:
            print(f"sealed={await seal_plain_secrets(engine, totp)}")
    finally:
        await engine.dispose()
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ingest_gateway.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    user = commands.add_parser("create-user")
    user.add_argument("--email", required=True)
    user.add_argument("--role", choices=[role.value for role in UserRole], required=True)
    user.add_argument(
        "--password-file",
        required=True,
        help="file holding the password, or - for standard input (kept out of shell history and process lists)",
    )
    user.add_argument("--provider-id", type=uuid.UUID)
    user.add_argument("--totp", action="store_true", help="also give a provider a TOTP secret")
    source = commands.add_parser("create-lead-source")
    source.add_argument("--name", required=True)
    source.add_argument("--trusted", action="store_true", help="its leads are approved without an admin")
    unlocking = commands.add_parser("unlock-user", help="clear a locked account's lock (audited as user.unlocked)")
    unlocking.add_argument("--email", required=True)
    commands.add_parser("seal-totp-secrets", help="seal TOTP secrets stored before sealing, with TOTP_ENCRYPTION_KEY")
    arguments = parser.parse_args(argv)
    if arguments.command == "create-user" and arguments.role == UserRole.provider and arguments.provider_id is None:
        parser.error("--provider-id is required for a provider")
    password = None
    if arguments.command == "create-user":
        path = arguments.password_file
        given = sys.stdin.read() if path == STANDARD_INPUT else Path(path).read_text()
        password = given.strip()
        if len(password) < 12:
            parser.error("the password must have at least 12 characters")
    if failed := asyncio.run(run(arguments, password)):
        raise SystemExit(failed)


if __name__ == "__main__":
    main()
