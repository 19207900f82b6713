"""distribution-worker settings."""

from pydantic import Field

from libs.settings import PoolPerHandlerSettings


class Settings(PoolPerHandlerSettings):
    service_name: str = "distribution-worker"
    http_port: int = Field(8101, ge=1, le=65535, description="Health and metrics.")
    max_providers_per_lead: int = Field(3, ge=1, le=50, description="An approved lead goes to at most this many.")
