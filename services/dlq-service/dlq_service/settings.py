"""dlq-service settings."""

from pydantic import Field

from libs.settings import WorkerSettings


class Settings(WorkerSettings):
    service_name: str = "dlq-service"
    http_port: int = Field(8001, ge=1, le=65535, description="Admin API, health and metrics.")
    nack_backoff_s: float = Field(
        1.0, ge=0, le=60, description="Pause before handing back a dead letter that could not be recorded."
    )
