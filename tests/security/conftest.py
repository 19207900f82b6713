"""Each service's broker user and database role, provisioned by the real provisioning code for these tests: in a
vhost of their own (what they publish disturbs no other test) and in the test database, removed at the end."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx
import pytest

from libs.db import grants
from libs.messaging import permissions
from libs.runtime import SERVICES


def with_login(url: str, user: str, password: str, *, path: str | None = None, scheme: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
    return urlunsplit((scheme or parts.scheme, netloc, parts.path if path is None else path, "", ""))


def database_name(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/")


def as_superuser(database: str, script: str) -> None:
    """Creating roles needs a superuser: PostgreSQL's own, over the local socket, as `stack.sh` does it."""
    if os.geteuid() != 0:
        pytest.fail("these tests create database roles through `runuser -u postgres`: run them as root", pytrace=False)
    subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-1", "-qAt", "-v", "ON_ERROR_STOP=1", "-d", database],
        input=script.encode(),
        check=True,
        capture_output=True,
    )


@dataclass(frozen=True)
class Administrator:
    """The broker administrator and the tables' owner, as the test environment gives them."""

    amqp_url: str
    management_url: str
    database_url: str

    @property
    def management_api(self) -> str:
        parts = urlsplit(self.management_url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api"

    @property
    def management_auth(self) -> tuple[str, str]:
        parts = urlsplit(self.management_url)
        return unquote(parts.username or ""), unquote(parts.password or "")

    def amqp_in(self, vhost: str) -> str:
        return urlunsplit(urlsplit(self.amqp_url)._replace(path="/" + quote(vhost, safe="")))


@pytest.fixture(scope="session")
def administrator(rabbitmq_url: str, database_url: str) -> Administrator:
    management_url = os.environ.get("RABBITMQ_MANAGEMENT_URL")
    if not management_url:
        pytest.fail("RABBITMQ_MANAGEMENT_URL (the broker administrator's) is not set", pytrace=False)
    return Administrator(rabbitmq_url, management_url, database_url)


@pytest.fixture(scope="session")
def security_vhost(administrator: Administrator) -> Iterator[str]:
    vhost = f"{permissions.vhost_of(administrator.amqp_url)}-security"
    admin_user = administrator.management_auth[0]
    with httpx.Client(base_url=administrator.management_api, auth=administrator.management_auth) as api:
        api.put(f"/vhosts/{quote(vhost, safe='')}").raise_for_status()
        api.put(
            f"/permissions/{quote(vhost, safe='')}/{quote(admin_user, safe='')}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()
        yield vhost
        api.delete(f"/vhosts/{quote(vhost, safe='')}").raise_for_status()


def remove_principals(administrator: Administrator, prefix: str) -> None:
    """Broker users and database roles of that prefix, with everything they were granted."""
    with httpx.Client(base_url=administrator.management_api, auth=administrator.management_auth) as api:
        for user in permissions.users(prefix):
            api.delete(f"/users/{quote(user.name, safe='')}")
    roles = ", ".join(f'"{grants.role_name(service, prefix)}"' for service in grants.GRANTS)
    as_superuser(
        database_name(administrator.database_url),
        f"DROP OWNED BY {roles};\nDROP ROLE {roles};",
    )


@dataclass(frozen=True)
class Principal:
    """One service's connection URLs as its own user and role."""

    service: str
    amqp_url: str
    database_url: str
    management_url: str | None


@pytest.fixture(scope="session")
async def principals(administrator: Administrator, security_vhost: str) -> AsyncIterator[dict[str, Principal]]:
    """Each service's principal, provisioned with fresh passwords by `permissions.apply` and `grants.statements`."""
    prefix = f"{database_name(administrator.database_url)}_least"
    passwords = {user.secret: secrets.token_urlsafe(24) for user in permissions.users(prefix)}
    passwords |= {grants.secret_name(service): secrets.token_urlsafe(24) for service in grants.GRANTS}
    await permissions.apply(
        administrator.amqp_in(security_vhost), administrator.management_url, passwords, prefix=prefix
    )
    as_superuser(
        database_name(administrator.database_url), ";\n".join(grants.statements(passwords, prefix=prefix)) + ";"
    )
    found = {}
    for service in (declared.name for declared in SERVICES):
        monitor = permissions.user_name(f"{service}-monitoring", prefix)
        found[service] = Principal(
            service=service,
            amqp_url=with_login(
                administrator.amqp_in(security_vhost),
                permissions.user_name(service, prefix),
                passwords[f"mq-{service}"],
            ),
            database_url=with_login(
                administrator.database_url,
                grants.role_name(service, prefix),
                passwords[grants.secret_name(service)],
            ),
            management_url=(
                with_login(administrator.management_url, monitor, passwords[f"mq-{service}-monitoring"], path="")
                if permissions.GRANTS[service].monitors
                else None
            ),
        )
    yield found
    remove_principals(administrator, prefix)
