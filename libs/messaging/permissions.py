"""What each service may do on the broker: its own RabbitMQ user, with permissions derived from the topology.

A service's user may configure (declare) only its own queues, write only to the exchanges it publishes to
(on the topic exchange only the routing keys of the messages it sends), and read only its own queues (on
the topic exchange only its own bindings). The exchanges and every other queue are declared by `apply`, run
with the broker administrator's credentials like a migration; a service finds them declared.

    python -m libs.messaging.permissions apply [--secrets DIR] [--prefix fmhl]
    python -m libs.messaging.permissions declare     (the topology only)
    python -m libs.messaging.permissions show

read the administrator's `RABBITMQ_URL` (its vhost is the one provisioned) and `RABBITMQ_MANAGEMENT_URL`, and
each user's password from `DIR/<secret>` (`mq-email-worker`, ...) or, without `--secrets`, from
`FMHL_SECRET_<SECRET>` (`FMHL_SECRET_MQ_EMAIL_WORKER`). Running them again changes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import httpx
from faststream.rabbit import RabbitBroker

from libs.contracts import (
    DeadLetterRetrySucceeded,
    ExportReport,
    LeadApproved,
    LeadSubmitted,
    Message,
    RunScheduledJob,
    SendEmail,
    SendEmails,
)
from libs.messaging.broker import declare_topology
from libs.messaging.topology import (
    DEAD_LETTER_EXCHANGE,
    DISTRIBUTION,
    DLQ_OUTCOMES,
    EMAIL,
    EVENTS_EXCHANGE,
    REPORT_EXPORT,
    SCHEDULED_JOBS,
    TOPOLOGY,
    Topology,
    WorkQueue,
)
from libs.settings import node_urls

DEFAULT_EXCHANGE = "amq.default"
"""The name RabbitMQ checks permissions against when a message is published to the default exchange ("")."""

NOTHING = "^$"
"""RabbitMQ's way to grant no resource at all."""


def matching(names: Iterable[str]) -> str:
    """A permission regex matching exactly these names (RabbitMQ matches an unanchored regex anywhere)."""
    unique = sorted(set(names))
    if not unique:
        return NOTHING
    return "^(" + "|".join(re.escape(name) for name in unique) + ")$"


@dataclass(frozen=True)
class Permissions:
    """`rabbitmqctl set_permissions` for one vhost; `topic_*` restrict routing keys on the events exchange."""

    configure: str
    write: str
    read: str
    topic_write: str = NOTHING
    topic_read: str = NOTHING


@dataclass(frozen=True)
class BrokerGrant:
    """What a service does on the broker, in the topology's terms; its permissions follow from it."""

    consumes: tuple[WorkQueue, ...] = ()
    """Consumed through the consumer policy: it also republishes to their delay queues (default exchange), to
    the dead-letter exchange, and reports a DLQ retry's success on the events exchange."""
    publishes: tuple[type[Message], ...] = ()
    captures_dead_letters: bool = False
    """Consumes `dlq`, bound to the dead-letter exchange, and keeps what it cannot record in the parking queue
    (published and read back through the default exchange)."""
    republishes: bool = False
    """Retries dead letters straight to the work queue they failed in, by name through the default exchange:
    never on the events exchange, whatever the message says about where it came from."""
    monitors: bool = False
    """Reads queue statistics from the management API, as a second user with the `monitoring` tag."""

    def queues(self, topology: Topology = TOPOLOGY) -> tuple[str, ...]:
        """The queues it declares itself, and so may configure: its work queues and their delay queues."""
        own = [name for queue in self.consumes for name in _with_delay_queues(queue)]
        if self.captures_dead_letters:
            own += dead_letter_queues(topology)
        return tuple(own)

    def routing_keys(self, topology: Topology = TOPOLOGY) -> tuple[str, ...]:
        """What it may publish on the events exchange."""
        keys = [message.routing_key() for message in self.publishes]
        if self.consumes:
            keys.append(DeadLetterRetrySucceeded.message_type)
        return tuple(keys)

    def permissions(self, topology: Topology = TOPOLOGY) -> Permissions:
        queues = self.queues(topology)
        bound = [queue.name for queue in self.consumes]
        written = [EVENTS_EXCHANGE] if self.routing_keys(topology) else []
        read = list(queues)
        if self.consumes:
            # Dead-lettering and delay queues; binding a work queue needs write on it and read on the exchange.
            written += [DEAD_LETTER_EXCHANGE, DEFAULT_EXCHANGE, *bound]
            read.append(EVENTS_EXCHANGE)
        if self.captures_dead_letters:
            written.append(topology.dlq_queue)
            read.append(DEAD_LETTER_EXCHANGE)
        if self.republishes:
            written.append(DEFAULT_EXCHANGE)
        return Permissions(
            configure=matching(queues),
            write=matching(written),
            read=matching(read),
            topic_write=matching(self.routing_keys(topology)),
            topic_read=matching(key for queue in self.consumes for key in queue.routing_keys),
        )


def _with_delay_queues(queue: WorkQueue) -> list[str]:
    return [queue.name, *(queue.delay_queue(attempt) for attempt in range(1, queue.max_attempts))]


def dead_letter_queues(topology: Topology = TOPOLOGY) -> list[str]:
    """`dlq`, and `dlq.parking` where the topology declares one (the dlq-service's store of last resort)."""
    parking: str | None = getattr(topology, "parking_queue", None)
    return [topology.dlq_queue] if parking is None else [topology.dlq_queue, parking]


def queue_names(topology: Topology = TOPOLOGY) -> tuple[str, ...]:
    """Every queue of the topology: `dlq` (and its parking queue), the work queues and their delay queues."""
    work = (name for queue in topology.work_queues for name in _with_delay_queues(queue))
    return (*dead_letter_queues(topology), *work)


GRANTS: dict[str, BrokerGrant] = {
    "ingest-gateway": BrokerGrant(publishes=(LeadSubmitted, LeadApproved, ExportReport, SendEmail)),
    "distribution-worker": BrokerGrant(consumes=(DISTRIBUTION,), publishes=(SendEmails,)),
    "email-worker": BrokerGrant(consumes=(EMAIL,)),
    "export-worker": BrokerGrant(consumes=(REPORT_EXPORT,), publishes=(SendEmail,)),
    "dlq-service": BrokerGrant(consumes=(DLQ_OUTCOMES,), captures_dead_letters=True, republishes=True, monitors=True),
    "scheduler": BrokerGrant(consumes=(SCHEDULED_JOBS,), publishes=(RunScheduledJob, SendEmail)),
}
"""Keyed by the service's name (libs.runtime.SERVICES); a service without an entry gets no user."""


def broker_grant(service: str) -> BrokerGrant:
    """The declared grant of a service; KeyError names a service that has none (it would get no broker user)."""
    try:
        return GRANTS[service]
    except KeyError:
        raise KeyError(f"{service} has no broker grant in libs/messaging/permissions.py") from None


MONITORING_PERMISSIONS = Permissions(configure=NOTHING, write=NOTHING, read=NOTHING)
"""Access to the vhost's statistics in the management API, and to nothing over AMQP."""


@dataclass(frozen=True)
class BrokerUser:
    name: str
    secret: str
    """The file in the secrets directory that holds its password."""
    permissions: Permissions
    tags: tuple[str, ...] = ()


def user_name(service: str, prefix: str = "fmhl") -> str:
    return f"{prefix.replace('_', '-')}-{service}"


def users(prefix: str = "fmhl", grants: Mapping[str, BrokerGrant] = GRANTS) -> list[BrokerUser]:
    found = []
    for service, grant in grants.items():
        found.append(BrokerUser(user_name(service, prefix), f"mq-{service}", grant.permissions()))
        if grant.monitors:
            found.append(
                BrokerUser(
                    user_name(f"{service}-monitoring", prefix),
                    f"mq-{service}-monitoring",
                    MONITORING_PERMISSIONS,
                    tags=("monitoring",),
                )
            )
    return found


class ManagementApi:
    """The few calls of RabbitMQ's HTTP API that provisioning needs, as the administrator."""

    def __init__(self, client: httpx.AsyncClient, management_url: str) -> None:
        parts = urlsplit(management_url)
        self.client = client
        self.base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api"
        self.auth = (unquote(parts.username or ""), unquote(parts.password or ""))

    async def _put(self, path: str, body: Mapping[str, object]) -> None:
        response = await self.client.put(f"{self.base}/{path}", json=body, auth=self.auth)
        response.raise_for_status()

    async def put_user(self, name: str, password: str, tags: Iterable[str]) -> None:
        await self._put(f"users/{quote(name, safe='')}", {"password": password, "tags": ",".join(tags)})

    async def put_permissions(self, vhost: str, user: str, permissions: Permissions) -> None:
        where = f"{quote(vhost, safe='')}/{quote(user, safe='')}"
        await self._put(
            f"permissions/{where}",
            {"configure": permissions.configure, "write": permissions.write, "read": permissions.read},
        )
        await self._put(
            f"topic-permissions/{where}",
            {"exchange": EVENTS_EXCHANGE, "write": permissions.topic_write, "read": permissions.topic_read},
        )


def vhost_of(amqp_url: str) -> str:
    path = urlsplit(node_urls(amqp_url)[0]).path
    return unquote(path[1:]) if len(path) > 1 else "/"


async def declare(amqp_url: str) -> None:
    """The whole topology, as the administrator: the only user that may configure the exchanges."""
    broker = RabbitBroker(node_urls(amqp_url)[0], logger=None)
    await broker.connect()
    try:
        await declare_topology(broker, TOPOLOGY)
    finally:
        await broker.stop()


async def apply(
    amqp_url: str, management_url: str, passwords: Mapping[str, str], *, prefix: str = "fmhl"
) -> list[BrokerUser]:
    """As the administrator: declares the whole topology in the URL's vhost, then creates or updates each
    service's user with its password (by secret name) and permissions there. Idempotent."""
    await declare(amqp_url)
    vhost = vhost_of(amqp_url)
    provisioned = users(prefix)
    async with httpx.AsyncClient(timeout=10.0) as client:
        api = ManagementApi(client, management_url)
        for user in provisioned:
            await api.put_user(user.name, passwords[user.secret], user.tags)
            await api.put_permissions(vhost, user.name, user.permissions)
    return provisioned


def table_rows(prefix: str = "fmhl", topology: Topology = TOPOLOGY) -> list[str]:
    """The declaration as Markdown table rows: service | user | declares and consumes | publishes | also writes."""
    rows = []
    for service, grant in GRANTS.items():
        delay_queues = sum(queue.max_attempts - 1 for queue in grant.consumes)
        queues = [queue.name for queue in grant.consumes]
        if grant.captures_dead_letters:
            queues[:0] = dead_letter_queues(topology)
        own = ", ".join(f"`{queue}`" for queue in queues) + (f" (+{delay_queues} delay queues)" if delay_queues else "")
        keys = ", ".join(f"`{key}`" for key in sorted(set(grant.routing_keys(topology))))
        others = []
        if grant.consumes:
            by_name = "its delay queues" + (", retries to a work queue, parking" if grant.republishes else "")
            others += [f"`{DEAD_LETTER_EXCHANGE}`", f"default exchange ({by_name})"]
        if grant.monitors:
            others.append(f"management API as `{user_name(service + '-monitoring', prefix)}` (tag `monitoring`)")
        cells = [service, f"`{user_name(service, prefix)}`", own, keys, "; ".join(others)]
        rows.append("| " + " | ".join(cell or "none" for cell in cells) + " |")
    return rows


def secret_variable(name: str) -> str:
    """Where a secret comes from without a directory: `mq-email-worker` is `FMHL_SECRET_MQ_EMAIL_WORKER`."""
    return "FMHL_SECRET_" + name.upper().replace("-", "_")


def read_secrets(directory: Path | None, names: Iterable[str]) -> dict[str, str]:
    """Each secret from its file in `directory` (a Kubernetes Secret volume, the machine's secrets directory) or,
    without one, from its environment variable (compose's env_file); a missing one stops, naming where."""
    secrets = {}
    for name in names:
        if directory is None:
            value = os.environ.get(secret_variable(name), "").strip()
            where = secret_variable(name)
        else:
            path = directory / name
            value = path.read_text().strip() if path.is_file() else ""
            where = str(path)
        if not value:
            raise SystemExit(f"missing secret {where}: generate it first (deploy/local/stack.sh credentials)")
        secrets[name] = value
    return secrets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m libs.messaging.permissions", description=__doc__)
    parser.add_argument("command", choices=["apply", "declare", "show"])
    parser.add_argument("--secrets", type=Path, help="directory of password files (else FMHL_SECRET_<NAME>)")
    parser.add_argument("--prefix", default="fmhl", help="user names are <prefix>-<service>")
    arguments = parser.parse_args(argv)
    if arguments.command == "show":
        print("\n".join(table_rows(arguments.prefix)))
        for user in users(arguments.prefix):
            print(user.name, *(f"{key}={value}" for key, value in vars(user.permissions).items()), sep="\n  ")
        return
    needed = ("RABBITMQ_URL",) if arguments.command == "declare" else ("RABBITMQ_URL", "RABBITMQ_MANAGEMENT_URL")
    for name in needed:
        if not os.environ.get(name):
            raise SystemExit(f"{name} is required: the broker administrator's URL")
    if arguments.command == "declare":
        asyncio.run(declare(os.environ["RABBITMQ_URL"]))
        return
    passwords = read_secrets(arguments.secrets, (user.secret for user in users(arguments.prefix)))
    provisioned = asyncio.run(
        apply(os.environ["RABBITMQ_URL"], os.environ["RABBITMQ_MANAGEMENT_URL"], passwords, prefix=arguments.prefix)
    )
    print(f"broker users provisioned in vhost {vhost_of(os.environ['RABBITMQ_URL'])}:", file=sys.stderr)
    for user in provisioned:
        print(f"  {user.name}", file=sys.stderr)


if __name__ == "__main__":
    main()
