"""dlq-service settings."""

from pydantic import Field, SecretStr, field_validator

from libs.auth import AuthSettingsMixin
from libs.settings import WorkerSettings, refuse_placeholder


class Settings(AuthSettingsMixin, WorkerSettings):
    service_name: str = "dlq-service"
    http_port: int = Field(8001, ge=1, le=65535, description="Admin API, health and metrics.")
    nack_backoff_s: float = Field(
        1.0, ge=0, le=60, description="Pause before handing back a dead letter while PostgreSQL is unreachable."
    )
    capture_attempts: int = Field(
        3, ge=2, le=10, description="Tries to record one dead letter PostgreSQL refuses (the last one with less of"
        " it) before it is parked in dlq.parking.",
    )  # fmt: skip
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

    @field_validator("dlq_retry_signing_key")
    @classmethod
    def _refuse_placeholder_key(cls, value: SecretStr) -> SecretStr:
        return refuse_placeholder(value)
