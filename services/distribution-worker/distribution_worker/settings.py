"""distribution-worker settings."""

from typing import Any

from pydantic import Field, model_validator

from libs.settings import WorkerSettings

MAX_POOL_SIZE = 100


class Settings(WorkerSettings):
    service_name: str = "distribution-worker"
    http_port: int = Field(8101, ge=1, le=65535, description="Health and metrics.")
    max_providers_per_lead: int = Field(3, ge=1, le=50, description="An approved lead goes to at most this many.")
    db_pool_size: int = Field(
        10,
        ge=1,
        le=MAX_POOL_SIZE,
        description="Connections kept in the pool; unless set, PREFETCH (one per handler running at once).",
    )

    @model_validator(mode="before")
    @classmethod
    def pool_follows_prefetch(cls, data: Any) -> Any:
        """Every handler running at once holds a connection while it distributes. With fewer kept in the pool,
        the overflow ones are closed as they come back and opened again a few leads later: a TLS handshake,
        authentication, type introspection, statements prepared again and a new server process each time."""
        if not isinstance(data, dict) or "db_pool_size" in data:
            return data
        prefetch = data.get("prefetch")
        if isinstance(prefetch, int | str) and str(prefetch).strip().isdigit():
            return {**data, "db_pool_size": min(int(prefetch), MAX_POOL_SIZE)}
        return data
