"""email-worker settings."""

from pydantic import Field

from libs.settings import WorkerSettings


class Settings(WorkerSettings):
    service_name: str = "email-worker"
    http_port: int = Field(8102, ge=1, le=65535, description="Health and metrics.")
