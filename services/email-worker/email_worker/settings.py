"""email-worker settings."""

from pydantic import Field, SecretStr

from libs.settings import PoolPerHandlerSettings


class Settings(PoolPerHandlerSettings):
    service_name: str = "email-worker"
    http_port: int = Field(8102, ge=1, le=65535, description="Health and metrics.")
    smtp_host: str = Field(description="SMTP server host.")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP server port.")
    smtp_from: str = Field("fmhl-ops <no-reply@fmhl.local>", description="From header and envelope sender.")
    smtp_username: str | None = Field(None, description="SMTP login, when the server asks for one.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    smtp_starttls: bool = Field(False, description="Upgrade the connection with STARTTLS.")
    smtp_timeout_s: float = Field(10.0, gt=0, le=120, description="Connect and command timeout.")
    smtp_idle_s: float = Field(
        30.0,
        ge=0,
        le=300,
        description="How long an SMTP connection is kept open for the next mail after one was sent (0: one connection "
        "per mail). Keep it below the server's idle timeout (RFC 5321 asks servers for at least 5 minutes).",
    )
