"""ingest-gateway settings."""

from pathlib import Path

from pydantic import Field

from libs.auth import AuthSettingsMixin, TotpSettingsMixin
from libs.auth.login import LoginSettingsMixin
from libs.settings import HttpWorkersSettingsMixin, ServiceSettings


class Settings(HttpWorkersSettingsMixin, LoginSettingsMixin, TotpSettingsMixin, AuthSettingsMixin, ServiceSettings):
    service_name: str = "ingest-gateway"
    http_port: int = Field(8000, ge=1, le=65535, description="Public API, health and metrics.")
    # Leads no longer take one connection each (ingest_gateway.submissions.GroupCommit writes a batch on one);
    # the rest of the API's requests share the pool.
    db_pool_size: int = Field(10, ge=1, le=100, description="Connections kept in the pool.")
    max_body_bytes: int = Field(65_536, ge=1024, le=10_000_000, description="Larger request bodies get 413.")
    export_dir: Path = Field(description="Where export-worker writes CSV files; downloads are served from here.")
    api_key_cache_ttl_s: float = Field(
        10.0,
        ge=0,
        le=300,
        description="How long a process remembers a lead source's valid API key: a revoked key is refused by every "
        "process within this time. 0 looks the key up on every request.",
    )
