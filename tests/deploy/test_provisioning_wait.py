"""What a Kubernetes pod's init container waits for (`python -m libs.db.grants wait`), on the real database: its
own role able to log in and holding everything its image declares, and nothing less."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from libs.db import grants

SERVICE = "email-worker"


def as_superuser(database: str, script: str) -> None:
    """Creating roles needs a superuser: PostgreSQL's own, over the local socket, as `stack.sh` does it."""
    if os.geteuid() != 0:
        pytest.fail("these tests create database roles through `runuser -u postgres`: run them as root", pytrace=False)
    subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-1", "-qAt", "-v", "ON_ERROR_STOP=1", "-d", database],
        input=script.encode(), check=True, capture_output=True,
    )  # fmt: skip


class Roles:
    """The six roles under a prefix of the test's own, with fresh passwords; provisioned only when asked."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        self.database = parts.path.lstrip("/")
        self.prefix = f"{self.database}_wait_{secrets.token_hex(3)}"
        self.passwords = {grants.secret_name(service): secrets.token_urlsafe(18) for service in grants.GRANTS}
        role = grants.role_name(SERVICE, self.prefix)
        password = self.passwords[grants.secret_name(SERVICE)]
        netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
        self.service_url = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        self.provisioned = False

    def provision(self) -> None:
        as_superuser(self.database, ";\n".join(grants.statements(self.passwords, prefix=self.prefix)) + ";")
        self.provisioned = True

    def revoke(self, statement: str) -> None:
        as_superuser(self.database, statement.format(role=f'"{grants.role_name(SERVICE, self.prefix)}"'))

    def remove(self) -> None:
        names = ", ".join(f'"{grants.role_name(service, self.prefix)}"' for service in grants.GRANTS)
        as_superuser(self.database, f"DROP OWNED BY {names};\nDROP ROLE {names};")


@pytest.fixture
def roles(database_url: str) -> Iterator[Roles]:
    created = Roles(database_url)
    yield created
    if created.provisioned:
        created.remove()


async def test_a_pod_waits_while_its_role_cannot_log_in(roles: Roles) -> None:
    lacking = await grants.wait(roles.service_url, SERVICE, timeout_s=0)
    assert lacking == ["a connection as the service's role (DBAPIError)"]


async def test_a_pod_starts_once_its_role_holds_its_whole_declaration(roles: Roles) -> None:
    roles.provision()
    assert await grants.wait(roles.service_url, SERVICE, timeout_s=0) == []


async def test_a_privilege_declared_but_not_held_keeps_the_pod_waiting(roles: Roles) -> None:
    roles.provision()
    assert any(grant.table.name == "email_log" and grant.allows(grants.INSERT) for grant in grants.GRANTS[SERVICE])
    roles.revoke("REVOKE INSERT ON email_log FROM {role}")
    assert await grants.wait(roles.service_url, SERVICE, timeout_s=0) == ["INSERT on public.email_log"]
