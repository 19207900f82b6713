"""Typed service settings: read from the environment (or `NAME_FILE`), refused at start when wrong."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import AliasChoices, AnyHttpUrl, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


def cpus_available() -> int:
    """CPUs this process may use: its affinity, capped by its cgroup's CPU quota (a container's CPU limit), so a
    pod limited to two CPUs on a large node does not start a worker (and a database pool) per node CPU."""
    count = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


class HttpWorkersSettingsMixin:
    """Mixed into the settings of a service whose HTTP requests are CPU work (the ingest-gateway, the dlq-service's
    admin API): several server processes share its port (libs.web.server)."""

    http_workers: int = Field(
        default_factory=lambda: min(cpus_available(), 4),
        ge=1,
        le=64,
        description="Server processes sharing HTTP_PORT (default: one per CPU the process may use, at most 4: each "
        "process's pool counts against PostgreSQL's max_connections). Each runs the whole service, with its own "
        "database pool (DB_POOL_SIZE), consumers and relays; /metrics and METRICS_PORT answer their metrics summed.",
    )


PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "change_me", "secret", "password", "todo", "xxx"})


class FileSecretsSource(PydanticBaseSettingsSource):
    """`DATABASE_URL_FILE=/run/secrets/db` reads the value from that file (Docker and Kubernetes secrets)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = field_name.upper()
        path = os.environ.get(f"{variable}_FILE")
        if not path:
            return None, field_name, False
        if any(name.upper() == variable for name in os.environ):
            # Neither may silently win: the one left behind is what someone believes is in force.
            raise SettingsError(f"{variable} and {variable}_FILE are both set: keep one")
        try:
            return Path(path).read_text().strip(), field_name, False
        except OSError as error:
            raise SettingsError(f"{field_name.upper()}_FILE: cannot read {path}: {error.strerror}") from error

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the environment variable."""


class ServiceSettings(BaseSettings):
    """What every fmhl-ops service reads. Each service extends it with its own class."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, frozen=True)

    service_name: str = Field(description="Name in logs, metrics and broker connections.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Lowest level logged.")
    log_format: Literal["json", "console"] = Field("json", description="json for machines, console for humans.")
    metrics_enabled: bool = Field(True, description="Serve /metrics.")
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Also serve /metrics on this internal port (unset: only on HTTP_PORT).",
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP server binds.")
    http_port: int = Field(ge=1, le=65535, description="Port of health, metrics and (for APIs) the API.")
    database_url: SecretStr = Field(description="postgresql+asyncpg://user:password@host:port/db")
    rabbitmq_url: SecretStr = Field(
        description="amqp://user:password@host:port/vhost, or a cluster's nodes' URLs separated by commas"
    )
    health_check_timeout_s: float = Field(2.0, gt=0, le=30, description="Timeout of each readiness check.")
    publish_timeout_s: float = Field(
        5.0, gt=0, le=60, description="A broker under a memory alarm blocks publishers: fail after this."
    )
    db_statement_timeout_ms: int = Field(15_000, ge=100, description="PostgreSQL statement_timeout.")
    db_pool_size: int = Field(5, ge=1, le=100, description="Connections kept in the pool.")
    traces_exporter: Literal["none", "console", "otlp"] = Field(
        "none",
        validation_alias=AliasChoices("otel_traces_exporter", "traces_exporter"),
        description="Where finished spans go: otlp (OTLP/HTTP protobuf), console or none. OTEL_TRACES_EXPORTER is the "
        "standard name and wins; unset with an OTLP endpoint set, it is otlp.",
    )
    otel_exporter_otlp_endpoint: AnyHttpUrl | None = Field(
        None, description="OTLP/HTTP receiver (http://collector:4318): spans go to its /v1/traces."
    )
    otel_exporter_otlp_traces_endpoint: AnyHttpUrl | None = Field(
        None, description="The full URL spans are posted to, instead of OTEL_EXPORTER_OTLP_ENDPOINT's /v1/traces."
    )
    telemetry_enabled: bool = Field(
        True,
        description="false: no instruments, spans or trace propagation at all (no-op meter and tracer, no broker "
        "telemetry middleware), to run or measure without telemetry's cost.",
    )
    traces_sample_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded when TRACES_EXPORTER sends them somewhere (a message or request "
        "follows its caller's decision); with no exporter no span is recorded, only trace ids propagate.",
    )
    queue_depth_alert_threshold: int = Field(100, ge=1, description="QueueBacklogHigh fires above this depth.")
    dlq_size_alert_threshold: int = Field(100, ge=1, description="DLQSizeHigh fires above this many entries.")
    distribution_duration_p95_threshold_ms: int = Field(
        2000, ge=1, description="DistributionDurationHigh fires when p95 exceeds this."
    )
    inbox_query_p95_threshold_ms: int = Field(1000, ge=1, description="InboxQuerySlow fires when p95 exceeds this.")

    @model_validator(mode="before")
    @classmethod
    def _otlp_when_an_endpoint_is_set(cls, data: Any) -> Any:
        """The OpenTelemetry convention: an endpoint given and no exporter named means spans go there."""
        if not isinstance(data, dict) or data.keys() & {"otel_traces_exporter", "traces_exporter"}:
            return data
        if data.keys() & {"otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint"}:
            return {**data, "traces_exporter": "otlp"}
        return data

    @property
    def otlp_traces_endpoint(self) -> str | None:
        """Where OTLP spans are posted, as the specification composes it; None leaves the exporter's default."""
        if self.otel_exporter_otlp_traces_endpoint is not None:
            return str(self.otel_exporter_otlp_traces_endpoint)
        if self.otel_exporter_otlp_endpoint is not None:
            return str(self.otel_exporter_otlp_endpoint).rstrip("/") + "/v1/traces"
        return None

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        level = value.upper() if isinstance(value, str) else value
        return "WARNING" if level == "WARN" else level

    @field_validator("database_url", "rabbitmq_url")
    @classmethod
    def _refuse_placeholders(cls, value: SecretStr) -> SecretStr:
        return refuse_placeholder(value)

    @field_validator("rabbitmq_url")
    @classmethod
    def _one_cluster(cls, value: SecretStr) -> SecretStr:
        node_urls(value.get_secret_value())
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, FileSecretsSource(settings_cls)


def node_urls(rabbitmq_url: str) -> tuple[str, ...]:
    """RABBITMQ_URL names one node, or the nodes of one cluster separated by commas. A cluster shares its users
    and virtual hosts, so the URLs may differ only in host and port; anything else is refused at start."""
    urls = tuple(url.strip() for url in rabbitmq_url.split(",") if url.strip())
    if not urls:
        raise ValueError("RABBITMQ_URL names no broker")
    parts = [urlsplit(url) for url in urls]
    for number, part in enumerate(parts, 1):
        # The URL itself stays out of the message: it holds the password.
        if part.scheme not in ("amqp", "amqps") or not part.hostname:
            raise ValueError(f"RABBITMQ_URL: address {number} is not an amqp:// or amqps:// URL with a host")
    shared = {(part.scheme, part.username, part.password, part.path, part.query) for part in parts}
    if len(shared) > 1:
        raise ValueError(
            "RABBITMQ_URL: the nodes of one cluster share scheme, user, password, virtual host and options; "
            "these URLs differ in more than host and port"
        )
    return urls


def refuse_placeholder(value: SecretStr) -> SecretStr:
    secret = value.get_secret_value()
    if secret.strip().lower() in PLACEHOLDER_SECRETS or "changeme" in secret.lower():
        raise ValueError("is a placeholder; set a real value")
    return value


Settings = TypeVar("Settings", bound=ServiceSettings)


def describe_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        variable = "_".join(str(part) for part in item["loc"]).upper() or "SETTINGS"
        reason = "is required" if item["type"] == "missing" else item["msg"].removeprefix("Value error, ")
        parts.append(f"{variable} {reason}")
    return "; ".join(parts)


def load_settings(settings_cls: type[Settings], **overrides: Any) -> Settings:
    """Build the settings or raise SettingsError naming every bad variable on one line."""
    try:
        return settings_cls(**overrides)
    except ValidationError as error:
        raise SettingsError(f"invalid configuration: {describe_errors(error)}") from None


def load_or_exit(settings_cls: type[Settings]) -> Settings:
    """For `__main__`: a bad setting stops the process at once with one line on stderr and exit code 78."""
    try:
        return load_settings(settings_cls)
    except SettingsError as error:
        print(f"{settings_cls.__name__}: {error}", file=sys.stderr)
        raise SystemExit(78) from None


class WorkerSettings(ServiceSettings):
    """Settings of a service that consumes a work queue."""

    prefetch: int = Field(10, ge=1, le=1000, description="Unacked messages per consumer, hence handler concurrency.")
    handler_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="A handler running longer fails as transient (far below consumer_timeout).",
    )


MAX_POOL_SIZE = 100


class PoolPerHandlerSettings(WorkerSettings):
    """A worker whose every running handler holds a database connection: the pool keeps PREFETCH of them unless
    DB_POOL_SIZE says otherwise. With fewer kept, the overflow ones are closed as they come back and opened again
    a few messages later: a TLS handshake, authentication, type introspection, statements prepared again and a
    new server process each time."""

    db_pool_size: int = Field(
        10,
        ge=1,
        le=MAX_POOL_SIZE,
        description="Connections kept in the pool; unless set, PREFETCH (one per handler running at once).",
    )

    @model_validator(mode="before")
    @classmethod
    def pool_follows_prefetch(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "db_pool_size" in data:
            return data
        prefetch = data.get("prefetch")
        if isinstance(prefetch, int | str) and str(prefetch).strip().isdigit():
            return {**data, "db_pool_size": min(int(prefetch), MAX_POOL_SIZE)}
        return data
