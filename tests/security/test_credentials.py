"""Generated credentials belong to the machine, not to a checkout: running `stack.sh credentials` from a second
checkout keeps every password the first checkout's services log in with, and a service's env file holds its own
credentials and the settings it needs, never the administrator's."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aio_pika
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from libs.db import grants
from libs.messaging import permissions
from libs.runtime import SERVICES
from tests.security.conftest import Administrator, database_name, remove_principals

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "local" / "stack.sh"
CREDENTIALS = ("DATABASE_URL", "RABBITMQ_URL", "RABBITMQ_MANAGEMENT_URL")


def new_checkout(root: Path) -> Path:
    """A checkout as stack.sh sees one: its own directory (so its own .run), the project's interpreter."""
    (root / "deploy" / "local").mkdir(parents=True)
    shutil.copy(STACK, root / "deploy" / "local" / "stack.sh")
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    return root


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


@dataclass(frozen=True)
class Machine:
    """One machine's secrets directory and the stack it provisions (the test vhost of the security tests, the
    test database, principals of their own prefix)."""

    secrets: Path
    environment: dict[str, str]
    prefix: str

    def credentials(self, checkout: Path) -> dict[str, dict[str, str]]:
        """Runs `stack.sh credentials` from that checkout; each service's env file, by service."""
        subprocess.run(
            ["bash", str(checkout / "deploy" / "local" / "stack.sh"), "credentials"],
            env=self.environment,
            check=True,
            capture_output=True,
        )
        return {service.name: env_file(checkout / ".run" / "env" / f"{service.name}.env") for service in SERVICES}

    def secret_files(self) -> dict[str, str]:
        return {path.name: path.read_text() for path in sorted(self.secrets.iterdir())}


@pytest.fixture(scope="module")
def machine(
    administrator: Administrator, security_vhost: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Machine]:
    secrets = tmp_path_factory.mktemp("machine") / "secrets"
    secrets.mkdir(mode=0o700)
    # The machine's administrator passwords, as the first checkout's `stack.sh infra` left them.
    (secrets / "mq-password").write_text(unquote(urlsplit(administrator.amqp_url).password or "") + "\n")
    (secrets / "db-password").write_text(unquote(urlsplit(administrator.database_url).password or "") + "\n")
    prefix = f"{database_name(administrator.database_url)}_checkout"
    environment = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "FMHL_SECRETS_DIR": str(secrets),
        "FMHL_VHOST": security_vhost,
        "FMHL_DATABASE": database_name(administrator.database_url),
        "FMHL_PRINCIPAL_PREFIX": prefix,
    }
    yield Machine(secrets, environment, prefix)
    remove_principals(administrator, prefix)


async def logs_in(service: str, settings: dict[str, str]) -> None:
    engine = create_async_engine(settings["DATABASE_URL"])
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT current_user")) == urlsplit(settings["DATABASE_URL"]).username
    finally:
        await engine.dispose()
    broker = await aio_pika.connect(settings["RABBITMQ_URL"])
    await broker.close()
    if "RABBITMQ_MANAGEMENT_URL" in settings:
        parts = httpx.URL(settings["RABBITMQ_MANAGEMENT_URL"])
        async with httpx.AsyncClient(auth=(parts.username, parts.password)) as client:
            answer = await client.get(f"{parts.scheme}://{parts.host}:{parts.port}/api/whoami")
        assert answer.status_code == 200, f"{service}: management API login refused"


async def test_a_second_checkout_keeps_the_passwords_the_first_ones_services_use(
    machine: Machine, tmp_path: Path
) -> None:
    first = machine.credentials(new_checkout(tmp_path / "first"))
    for service, settings in first.items():
        await logs_in(service, settings)
    secrets_before = machine.secret_files()

    second = machine.credentials(new_checkout(tmp_path / "second"))

    assert machine.secret_files() == secrets_before
    for service, settings in first.items():
        same = {name: settings[name] for name in CREDENTIALS if name in settings}
        assert {name: second[service][name] for name in same} == same, service
        await logs_in(service, settings)


def test_a_service_env_file_holds_its_own_credentials_and_only_the_settings_it_needs(
    machine: Machine, administrator: Administrator, tmp_path: Path
) -> None:
    files = machine.credentials(new_checkout(tmp_path / "checkout"))
    administrator_password = unquote(urlsplit(administrator.amqp_url).password or "")
    owner_password = unquote(urlsplit(administrator.database_url).password or "")
    token_keys = {service for service, settings in files.items() if "JWT_SECRET" in settings}
    assert token_keys == {"ingest-gateway", "dlq-service", "scheduler"}
    sealing_keys = {service for service, settings in files.items() if "TOTP_ENCRYPTION_KEY" in settings}
    # The gateway and the console (served by the dlq-service) log admins in with TOTP.
    assert sealing_keys == {"ingest-gateway", "dlq-service"}
    signing_keys = {service for service, settings in files.items() if "DLQ_RETRY_SIGNING_KEY" in settings}
    assert signing_keys == {"dlq-service"}
    for service, settings in files.items():
        contents = "\n".join(settings.values())
        assert administrator_password not in contents, service
        assert owner_password not in contents, service
        assert urlsplit(settings["DATABASE_URL"]).username == grants.role_name(service, machine.prefix)
        assert urlsplit(settings["RABBITMQ_URL"]).username == permissions.user_name(service, machine.prefix)
        assert ("RABBITMQ_MANAGEMENT_URL" in settings) == permissions.GRANTS[service].monitors
    for path in (tmp_path / "checkout" / ".run" / "env").iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"


def test_a_checkouts_secret_from_before_secrets_were_machine_wide_is_adopted_not_replaced(
    machine: Machine, tmp_path: Path
) -> None:
    checkout = new_checkout(tmp_path / "older")
    (checkout / ".run").mkdir()
    (checkout / ".run" / "jwt-secret").write_text("kept-from-this-checkout-0123456789\n")
    fresh = Machine(tmp_path / "fresh-secrets", {**machine.environment}, machine.prefix)
    shutil.copytree(machine.secrets, fresh.secrets)
    (fresh.secrets / "jwt-secret").unlink()
    fresh.environment["FMHL_SECRETS_DIR"] = str(fresh.secrets)

    fresh.credentials(checkout)

    assert (fresh.secrets / "jwt-secret").read_text() == "kept-from-this-checkout-0123456789\n"
