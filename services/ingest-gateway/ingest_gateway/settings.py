"""ingest-gateway settings."""

from pathlib import Path
from typing import Annotated

from pydantic import Field, IPvAnyNetwork, field_validator
from pydantic_settings import NoDecode

from libs.auth import AuthSettingsMixin, TotpSettingsMixin
from libs.settings import ServiceSettings


class Settings(TotpSettingsMixin, AuthSettingsMixin, ServiceSettings):
    service_name: str = "ingest-gateway"
    http_port: int = Field(8000, ge=1, le=65535, description="Public API, health and metrics.")
    max_body_bytes: int = Field(65_536, ge=1024, le=10_000_000, description="Larger request bodies get 413.")
    login_attempts_per_minute: int = Field(
        10, ge=1, le=1000, description="Per email and client address, shared by every replica."
    )
    login_lockout_threshold: int = Field(
        5, ge=1, le=100, description="Failed logins in a row that lock an account (an admin can unlock it)."
    )
    login_lockout_s: int = Field(900, ge=1, le=604_800, description="How long a locked account stays locked.")
    trusted_proxies: Annotated[tuple[IPvAnyNetwork, ...], NoDecode] = Field(
        (),
        description="Comma-separated CIDRs of the reverse proxies in front of the gateway: only from these is "
        "X-Forwarded-For believed for the client address (none by default).",
    )
    export_dir: Path = Field(description="Where export-worker writes CSV files; downloads are served from here.")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value
