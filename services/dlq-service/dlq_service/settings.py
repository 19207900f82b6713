"""dlq-service settings."""

from pydantic import Field, SecretStr, field_validator

from libs.auth import AuthSettingsMixin, TotpSecrets
from libs.auth.login import LoginSettingsMixin
from libs.settings import HttpWorkersSettingsMixin, WorkerSettings, refuse_placeholder


class Settings(HttpWorkersSettingsMixin, LoginSettingsMixin, AuthSettingsMixin, WorkerSettings):
    service_name: str = "dlq-service"
    http_port: int = Field(8001, ge=1, le=65535, description="Admin API, health and metrics.")
    # Each admin request reads on a connection of its own: with 5 kept, 8 clients reading at once (a console's
    # several tabs, a script) were answered partly over overflow connections, each opened for its request and
    # closed after it (a new server process, authentication, statements prepared again): 43-87 sessions opened
    # during one admin benchmark, 18-20 with 10 kept, and the pages' median p99 30 ms against 25.
    db_pool_size: int = Field(
        10,
        ge=1,
        le=100,
        description="Connections kept in the pool: as many as admin requests and capture use at once (the overflow"
        " beyond it is opened and closed per request).",
    )
    nack_backoff_s: float = Field(
        1.0, ge=0, le=60, description="Pause before handing back a dead letter while PostgreSQL is unreachable."
    )
    capture_attempts: int = Field(
        3, ge=2, le=10, description="Tries to record one dead letter PostgreSQL refuses (the last one with less of"
        " it) before it is parked in dlq.parking.",
    )  # fmt: skip
    prefetch: int = Field(
        400, ge=1, le=1000, description="Unacked dead letters at once: two capture batches, so that the next one"
        " fills while one is being written.",
    )  # fmt: skip
    outcomes_prefetch: int = Field(
        5, ge=1, le=100, description="Retry outcomes (dlq-outcomes) handled at once, each holding a database"
        " connection while it resolves its entry: a large redrive's successes must not take every connection of"
        " the pool (DB_POOL_SIZE, and as many again in overflow) from capture and the admin API.",
    )  # fmt: skip
    capture_batch: int = Field(
        200, ge=1, le=1000, description="Most dead letters recorded in one transaction (those arriving together)."
    )
    dlq_retry_signing_key: SecretStr = Field(
        min_length=32,
        description="HMAC key that marks each retry (at least 32 characters); only the dlq-service may know it.",
    )
    rabbitmq_management_url: SecretStr = Field(
        description="http://user:password@host:15672 (queue depths, unacked counts and consumers)."
    )
    queue_stats_cache_s: float = Field(5.0, ge=0, le=300, description="How long broker numbers are reused.")
    queues_requests_per_minute: int = Field(
        60, ge=1, le=10_000, description="Per admin, for GET /queues, shared by every replica."
    )
    redrive_default_rate: int = Field(10, ge=1, le=1000, description="Messages per second of a bulk retry.")
    redrive_max_rate: int = Field(200, ge=1, le=10_000, description="Upper bound a request may ask for.")
    dlq_size_poll_s: float = Field(10.0, gt=0, le=300, description="How often fmhl_dlq_size is recounted.")
    totp_encryption_key: SecretStr | None = Field(
        None,
        description="The gateway's TOTP_ENCRYPTION_KEY: the console's login opens users' sealed TOTP secrets with "
        "it. Unset: nobody can log in to the console (the JSON API is unaffected).",
    )
    scheduler_url: str | None = Field(
        None, description="The scheduler's HTTP base URL (http://127.0.0.1:8104): the console's jobs page uses its API."
    )
    console_session_idle_s: int = Field(
        900, ge=60, le=86_400, description="A console session unused this long is over (log in again)."
    )
    console_session_max_s: int = Field(
        28_800, ge=300, le=604_800, description="A console session ends this long after login, however active."
    )

    @field_validator("dlq_retry_signing_key")
    @classmethod
    def _refuse_placeholder_key(cls, value: SecretStr) -> SecretStr:
        return refuse_placeholder(value)

    @field_validator("totp_encryption_key")
    @classmethod
    def _valid_fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            refuse_placeholder(value)
            TotpSecrets.from_keys(value.get_secret_value())
        return value
