"""Renders the published contracts from the code: each service's AsyncAPI document (FastStream's own generation),
the OpenAPI document of each service with an API (Litestar's, completed by libs/web/openapi.py) and `.env.example`
(every setting of every service, from their settings classes).

    python docs/contracts/render.py            write them all (`task contracts`)
    python docs/contracts/render.py --check    exit 1 naming each file that differs from what the code generates

tests/contracts compare the committed files with this rendering: after changing a message, a route or a setting,
run `task contracts` and commit what it wrote.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast, get_args

import yaml
from cryptography.fernet import Fernet
from faststream.rabbit import RabbitBroker, RabbitQueue
from faststream.specification import AsyncAPI
from litestar import Litestar
from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from libs.contracts import ALL_MESSAGES, Message
from libs.messaging.broker import DEAD_LETTERS, EVENTS
from libs.messaging.permissions import GRANTS, BrokerGrant
from libs.messaging.topology import TOPOLOGY, WorkQueue
from libs.runtime import SERVICES, Service
from libs.settings import ServiceSettings
from libs.telemetry import setup_telemetry

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "docs" / "contracts"
ENV_EXAMPLE = ROOT / ".env.example"
VERSION = "1.0.0"
BROKER_URL = "amqp://rabbitmq:5672/fmhl"
"""The server the documents name: compose's RabbitMQ and vhost, with no credentials (each service has its own)."""

# Values only the rendering uses to build a service; none of them appears in a document.
DOCUMENTATION_VALUES: dict[str, Callable[[], str]] = {
    "database_url": lambda: "postgresql+asyncpg://fmhl:documentation-only@postgres:5432/fmhl",
    "rabbitmq_url": lambda: "amqp://fmhl:documentation-only@rabbitmq:5672/fmhl",
    "rabbitmq_management_url": lambda: "http://fmhl:documentation-only@rabbitmq:15672",
    "jwt_secret": lambda: "documentation-only-signing-key-0123456789abcdef",
    "dlq_retry_signing_key": lambda: "documentation-only-retry-signing-key-0123456789",
    "totp_encryption_key": lambda: Fernet.generate_key().decode(),
    "smtp_host": lambda: "smtp",
    "export_dir": lambda: "/exports",
}


# ---- AsyncAPI ---------------------------------------------------------------------------------------------------


def _message_types() -> dict[str, type[Message]]:
    return {contract.message_type: contract for contract in ALL_MESSAGES}


def _handler_name(contract: type[Message]) -> str:
    return "on_" + "".join(f"_{char.lower()}" if char.isupper() else char for char in contract.__name__).lstrip("_")


def _receives(name: str, payload: type[Any], description: str) -> Callable[..., Any]:
    """A subscriber's signature, which FastStream documents its payload from: the consumer policy of the service
    (libs/messaging/consumer.py) does the decoding and handling; this broker is never connected."""

    async def handler(message: Any) -> None:
        return None

    handler.__annotations__["message"] = payload
    handler.__name__ = handler.__qualname__ = name
    handler.__doc__ = description
    return handler


def _summary(contract: type[Message]) -> str:
    doc = " ".join((contract.__doc__ or "").split())
    if contract.routed_as:
        route = f"routing key `{contract.routed_as}` (routed as that message), AMQP `type` = message type"
    else:
        route = "routing key = AMQP `type` = message type"
    return f"`{contract.message_type}` ({contract.__name__}), {route}. {doc}".strip()


def _subscribe_work_queue(broker: RabbitBroker, queue: WorkQueue) -> None:
    routed = [
        (key, contract) for key in queue.routing_keys for contract in ALL_MESSAGES if contract.routing_key() == key
    ]
    for routing_key, contract in routed:
        description = (
            f"Consumed from quorum queue `{queue.name}` bound to `{EVENTS.name}` by `{routing_key}`; retried "
            f"after {', '.join(f'{delay / 1000:g} s' for delay in queue.retry_delays_ms)}, then dead-lettered "
            f"to `{DEAD_LETTERS.name}`. {_summary(contract)}"
        )
        broker.subscriber(
            RabbitQueue(queue.name, routing_key=routing_key, durable=True, declare=False),
            EVENTS,
            title=f"{queue.name}:{contract.message_type}",
            description=description,
        )(_receives(_handler_name(contract), contract, description))


def _publish_event(broker: RabbitBroker, contract: type[Message]) -> None:
    broker.publisher(
        exchange=EVENTS,
        routing_key=contract.routing_key(),
        schema=contract,
        persist=True,
        mandatory=True,
        message_type=contract.message_type,
        title=f"{EVENTS.name}:{contract.message_type}",
        description=f"Published persistent, mandatory and confirmed. {_summary(contract)}",
    )


def contract_broker(service: str, grant: BrokerGrant) -> RabbitBroker:
    """The service's side of the contracts as a FastStream broker (never connected), declared from the same data
    the running service uses: its broker grant (libs/messaging/permissions.py: what it consumes and publishes),
    the topology's bindings and the message contracts."""
    broker = RabbitBroker(BROKER_URL, logger=None)
    messages = _message_types()
    if grant.captures_dead_letters:
        description = (
            f"Every dead letter, from `{DEAD_LETTERS.name}` (fanout) into `{TOPOLOGY.dlq_queue}`: the original body "
            "and properties with the failure in `fmhl-*` headers (libs/messaging/headers.py) or the broker's "
            "`x-death`. Any body, JSON or not, is kept as bytes."
        )
        broker.subscriber(
            RabbitQueue(TOPOLOGY.dlq_queue, durable=True, declare=False),
            DEAD_LETTERS,
            title=TOPOLOGY.dlq_queue,
            description=description,
        )(_receives("on_dead_letter", bytes, description))
        broker.publisher(
            RabbitQueue(TOPOLOGY.parking_queue, durable=True, declare=False),
            schema=bytes,
            persist=True,
            title=f"{TOPOLOGY.parking_queue}:parked",
            description="A dead letter the dlq-service could not record after bounded attempts, with the error: "
            "kept for an operator, read back through the admin API, never consumed.",
        )
    if grant.republishes:
        for queue in TOPOLOGY.work_queues:
            broker.publisher(
                RabbitQueue(queue.name, durable=True, declare=False),
                schema=bytes,
                persist=True,
                title=f"{queue.name}:retried",
                description=f"A dead letter retried to `{queue.name}`, the work queue it failed in, by name through "
                "the default exchange: the original body and properties, marked with the retry's signed "
                "`fmhl-dlq-*` headers.",
            )
    for queue in grant.consumes:
        _subscribe_work_queue(broker, queue)
    for routing_key in dict.fromkeys(grant.routing_keys()):
        # A routing key the grant reaches through a contract it names (several may share one: `routed_as`), or
        # through the one contract of that type.
        named = [contract for contract in grant.publishes if contract.routing_key() == routing_key]
        for contract in named or [messages[routing_key]]:
            _publish_event(broker, contract)
    if grant.consumes:
        broker.publisher(
            exchange=DEAD_LETTERS,
            routing_key="",
            schema=bytes,
            persist=True,
            title=f"{DEAD_LETTERS.name}:failures",
            description="A delivery that failed for good (permanent error, or its last attempt): the original body "
            "and properties, with `fmhl-reason`, `fmhl-attempts`, `fmhl-service`, `fmhl-original-*` and "
            "`fmhl-error-*` headers; the dlq-service records it.",
        )
    return broker


def asyncapi_document(service: str) -> dict[str, Any]:
    broker = contract_broker(service, GRANTS[service])
    specification = AsyncAPI(
        broker,
        title=f"fmhl {service} messages",
        version=VERSION,
        description=f"What {service} consumes and publishes on RabbitMQ (generated by docs/contracts/render.py).",
    ).to_specification()
    document: dict[str, Any] = json.loads(specification.to_json())
    # FastStream keeps a broker's publishers in a set: sorted by name, the document is the same on every run.
    for mapping in (document, document.get("components", {})):
        for key in ("channels", "operations", "messages", "schemas"):
            if isinstance(mapping.get(key), dict):
                mapping[key] = dict(sorted(mapping[key].items()))
    return document


# ---- OpenAPI ----------------------------------------------------------------------------------------------------


def documentation_settings(settings_cls: type[ServiceSettings]) -> ServiceSettings:
    """The service's settings from its defaults alone (the environment is not read, so the documents do not depend
    on who renders them), with the required values filled for building only."""

    class Documented(settings_cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, **_: Any
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings,)

    required = {name: DOCUMENTATION_VALUES[name]() for name, field in settings_cls.model_fields.items()
                if field.is_required()}  # fmt: skip
    return cast("ServiceSettings", Documented(**required))


def built_app(service: Service) -> Litestar:
    main = importlib.import_module(f"{service.package}.main")
    settings_cls = importlib.import_module(f"{service.package}.settings").Settings
    app, _ = main.build(documentation_settings(settings_cls), setup_telemetry(f"{service.name}-contracts"))
    return cast("Litestar", app)


def openapi_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    """Each service that serves an API (an OpenAPI config), by name."""
    for service in SERVICES:
        app = built_app(service)
        if app.openapi_config is not None:
            yield service.name, app.openapi_schema.to_schema()


# ---- .env.example -----------------------------------------------------------------------------------------------


def variable_names(name: str, field: FieldInfo) -> list[str]:
    if isinstance(field.validation_alias, AliasChoices):
        return [str(choice).upper() for choice in field.validation_alias.choices]
    return [name.upper()]


def env_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, list | tuple | set | frozenset):
        return ",".join(env_value(item) for item in value)  # the comma-separated form these settings read
    return str(getattr(value, "value", value))


@dataclass
class Variable:
    names: list[str]
    description: str
    choices: str
    defaults: dict[str, str | None]
    """By service: its default, None where it is required."""


def _default(field: FieldInfo) -> str:
    """A default computed at start (a factory, e.g. from the CPU count) is shown unset: its description says it."""
    return "" if field.default_factory is not None else env_value(field.get_default())


def _choices(field: FieldInfo) -> str:
    literal = [arg for arg in get_args(field.annotation) if isinstance(arg, str)]
    return f" One of: {', '.join(literal)}." if literal and len(literal) == len(get_args(field.annotation)) else ""


def settings_variables() -> list[Variable]:
    found: dict[str, Variable] = {}
    for service in SERVICES:
        settings_cls: type[ServiceSettings] = importlib.import_module(f"{service.package}.settings").Settings
        for name, field in settings_cls.model_fields.items():
            # A service that only changes a shared setting's default keeps the shared description.
            shared = ServiceSettings.model_fields.get(name)
            description = field.description or (shared.description if shared is not None else None) or ""
            variable = found.setdefault(
                name, Variable(variable_names(name, field), " ".join(description.split()), _choices(field), {})
            )
            variable.defaults[service.name] = None if field.is_required() else _default(field)
    return list(found.values())


def _lines(variable: Variable, services: Iterable[str]) -> list[str]:
    defaults = {service: variable.defaults[service] for service in services}
    required = [service for service, default in defaults.items() if default is None]
    lines = [f"# {variable.description}{variable.choices}".rstrip()]
    distinct = set(defaults.values()) - {None}
    if required:
        lines.append("# Required" + ("" if len(required) == len(defaults) else f" by {', '.join(required)}") + ".")
    if len(distinct) > 1:
        lines.append("# Default by service: " + ", ".join(f"{s}={d}" for s, d in defaults.items()) + ".")
    value = next(iter(distinct)) if len(distinct) == 1 else ""
    for name in variable.names:
        lines.append(f"{name}=" if required and len(required) == len(defaults) else f"# {name}={value}")
    return lines


def env_example() -> str:
    names = [service.name for service in SERVICES]
    variables = settings_variables()
    groups: dict[tuple[str, ...], list[Variable]] = {}
    for variable in variables:
        users = tuple(service for service in names if service in variable.defaults)
        groups.setdefault(users, []).append(variable)
    out = [
        "# Every setting of the six services, generated from their settings classes by `task contracts`",
        "# (docs/contracts/render.py); tests/contracts fails when a setting is missing here.",
        "# Uncommented lines are required; a commented one shows its default. Any NAME may instead be read from the",
        "# file NAME_FILE names (Docker and Kubernetes secrets), never both at once. With OTLP traces, the exporter",
        "# also reads OpenTelemetry's own OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION and OTEL_BSP_* variables.",
    ]
    for users, members in sorted(groups.items(), key=lambda item: -len(item[0])):
        title = "every service" if len(users) == len(names) else ", ".join(users)
        out += ["", f"# ==== {title} " + "=" * max(0, 110 - len(title))]
        for variable in members:
            out += ["", *_lines(variable, users)]
    return "\n".join(out) + "\n"


# ---- all of them ------------------------------------------------------------------------------------------------


def as_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)


def rendered() -> dict[Path, str]:
    """Every generated file by path, as the code makes it now."""
    files = {CONTRACTS / "asyncapi" / f"{service}.yaml": as_yaml(asyncapi_document(service)) for service in GRANTS}
    for service, document in openapi_documents():
        files[CONTRACTS / "openapi" / f"{service}.yaml"] = as_yaml(document)
    files[ENV_EXAMPLE] = env_example()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/contracts/render.py", description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    check = parser.parse_args(argv).check
    stale = []
    for path, content in rendered().items():
        if path.exists() and path.read_text() == content:
            continue
        stale.append(path.relative_to(ROOT))
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    for path in stale:
        print(f"{'differs' if check else 'wrote'}: {path}", file=sys.stderr)
    return 1 if check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
