"""export-worker settings."""

from pydantic import Field

from libs.settings import WorkerSettings


class Settings(WorkerSettings):
    service_name: str = "export-worker"
    http_port: int = Field(8103, ge=1, le=65535, description="Health and metrics.")
