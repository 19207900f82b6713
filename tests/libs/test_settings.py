"""A missing or invalid setting stops a service at start, with one line naming the variable."""

import subprocess
import sys
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from ingest_gateway.settings import Settings as GatewaySettings
from libs.runtime import SERVICES, Service
from libs.settings import ServiceSettings, SettingsError, load_settings

VALID = {
    "SERVICE_NAME": "svc",
    "HTTP_PORT": "8080",
    "DATABASE_URL": "postgresql+asyncpg://u:real-password@localhost/db",
    "RABBITMQ_URL": "amqp://u:real-password@localhost/vhost",
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in VALID.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_valid_environment_loads_with_the_plan_defaults(environment: pytest.MonkeyPatch) -> None:
    settings = load_settings(ServiceSettings)
    assert settings.log_level == "INFO"
    assert settings.log_format == "json"
    assert settings.metrics_enabled is True
    assert settings.queue_depth_alert_threshold == 100
    assert settings.dlq_size_alert_threshold == 100
    assert settings.distribution_duration_p95_threshold_ms == 2000
    assert settings.inbox_query_p95_threshold_ms == 1000


def test_missing_variable_is_named(environment: pytest.MonkeyPatch) -> None:
    environment.delenv("DATABASE_URL")
    with pytest.raises(SettingsError, match="DATABASE_URL is required"):
        load_settings(ServiceSettings)


def test_invalid_value_is_named(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("HTTP_PORT", "not-a-port")
    environment.setenv("LOG_FORMAT", "xml")
    with pytest.raises(SettingsError) as raised:
        load_settings(ServiceSettings)
    message = str(raised.value)
    assert "HTTP_PORT" in message
    assert "LOG_FORMAT" in message
    assert "\n" not in message


def test_warn_is_accepted_as_a_level(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("LOG_LEVEL", "warn")
    assert load_settings(ServiceSettings).log_level == "WARNING"


def test_placeholder_secret_is_refused(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("RABBITMQ_URL", "changeme")
    with pytest.raises(SettingsError, match="RABBITMQ_URL is a placeholder"):
        load_settings(ServiceSettings)


def test_broker_addresses_of_different_clusters_are_refused_at_start(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("RABBITMQ_URL", "amqp://u:p@rabbit-a:5672/fmhl,amqp://u:p@rabbit-b:5672/other")
    with pytest.raises(SettingsError, match=r"RABBITMQ_URL.*differ in more than host and port"):
        load_settings(ServiceSettings)


def test_a_secret_can_come_from_a_file(environment: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "database_url"
    secret.write_text("postgresql+asyncpg://u:from-file@localhost/db\n")
    environment.delenv("DATABASE_URL")
    environment.setenv("DATABASE_URL_FILE", str(secret))
    assert load_settings(ServiceSettings).database_url.get_secret_value().endswith("from-file@localhost/db")


def test_an_unreadable_secret_file_is_named(environment: pytest.MonkeyPatch, tmp_path: Path) -> None:
    environment.setenv("DATABASE_URL_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match="DATABASE_URL_FILE"):
        load_settings(ServiceSettings)


@pytest.mark.parametrize("service", SERVICES, ids=lambda service: service.name)
def test_each_service_process_stops_at_start_naming_the_missing_variable(service: Service) -> None:
    environment = {"PATH": "/usr/bin:/bin", "RABBITMQ_URL": VALID["RABBITMQ_URL"]}
    result = subprocess.run(
        [sys.executable, "-m", service.package],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78
    assert result.stderr.strip().count("\n") == 0
    assert "DATABASE_URL is required" in result.stderr


GATEWAY = {"JWT_SECRET": "a-signing-key-only-this-test-ever-uses-0123", "EXPORT_DIR": "/tmp/exports",
           "TOTP_ENCRYPTION_KEY": Fernet.generate_key().decode()}  # fmt: skip


@pytest.fixture
def gateway_environment(environment: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in GATEWAY.items():
        environment.setenv(name, value)
    return environment


def test_the_gateway_names_a_missing_totp_encryption_key(gateway_environment: pytest.MonkeyPatch) -> None:
    gateway_environment.delenv("TOTP_ENCRYPTION_KEY")
    with pytest.raises(SettingsError, match="TOTP_ENCRYPTION_KEY is required"):
        load_settings(GatewaySettings)


@pytest.mark.parametrize("key", ["changeme", "not-a-fernet-key", Fernet.generate_key().decode() + ",short"])
def test_the_gateway_names_a_totp_encryption_key_that_is_not_a_fernet_key(
    gateway_environment: pytest.MonkeyPatch, key: str
) -> None:
    gateway_environment.setenv("TOTP_ENCRYPTION_KEY", key)
    with pytest.raises(SettingsError, match="TOTP_ENCRYPTION_KEY"):
        load_settings(GatewaySettings)


def test_no_proxy_is_trusted_unless_configured(gateway_environment: pytest.MonkeyPatch) -> None:
    assert load_settings(GatewaySettings).trusted_proxies == ()


def test_trusted_proxies_are_comma_separated_networks(gateway_environment: pytest.MonkeyPatch) -> None:
    gateway_environment.setenv("TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8")
    assert load_settings(GatewaySettings).trusted_proxies == (IPv4Network("10.0.0.0/8"), IPv6Network("fd00::/8"))


def test_a_trusted_proxy_that_is_not_a_network_is_named(gateway_environment: pytest.MonkeyPatch) -> None:
    gateway_environment.setenv("TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal")
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        load_settings(GatewaySettings)
