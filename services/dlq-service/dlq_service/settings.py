"""dlq-service settings."""

from pydantic import Field, SecretStr

from libs.auth import AuthSettingsMixin
from libs.settings import WorkerSettings


class Settings(AuthSettingsMixin, WorkerSettings):
    service_name: str = "dlq-service"
    http_port: int = Field(8001, ge=1, le=65535, description="Admin API, health and metrics.")
    nack_backoff_s: float = Field(
        1.0, ge=0, le=60, description="Pause before handing back a dead letter that could not be recorded."
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
