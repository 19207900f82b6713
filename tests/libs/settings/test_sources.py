"""Where a setting comes from: the variable or its `_FILE`, never both (the file alone: tests/libs/test_settings.py);
the OpenTelemetry variables by their standard names."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.settings import ServiceSettings, SettingsError, load_settings

VALID = {
    "SERVICE_NAME": "svc",
    "HTTP_PORT": "8080",
    "DATABASE_URL": "postgresql+asyncpg://u:real-password@localhost/db",
    "RABBITMQ_URL": "amqp://u:real-password@localhost/vhost",
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("TRACES_EXPORTER", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "DATABASE_URL_FILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in VALID.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_a_variable_and_its_file_together_are_refused_naming_both(
    environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "database-url"
    secret.write_text("postgresql+asyncpg://u:from-the-file@localhost/db\n")
    environment.setenv("DATABASE_URL_FILE", str(secret))

    with pytest.raises(SettingsError, match="DATABASE_URL and DATABASE_URL_FILE are both set"):
        load_settings(ServiceSettings)


def test_no_exporter_is_the_default(environment: pytest.MonkeyPatch) -> None:
    settings = load_settings(ServiceSettings)

    assert (settings.traces_exporter, settings.otlp_traces_endpoint) == ("none", None)


def test_an_otlp_endpoint_alone_sends_spans_to_its_traces_path(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    settings = load_settings(ServiceSettings)

    assert (settings.traces_exporter, settings.otlp_traces_endpoint) == ("otlp", "http://collector:4318/v1/traces")


def test_a_traces_endpoint_is_taken_as_it_is(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    environment.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/ingest")

    assert load_settings(ServiceSettings).otlp_traces_endpoint == "http://traces:9999/ingest"


def test_otel_traces_exporter_wins_over_the_endpoint_and_the_plans_name(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    environment.setenv("TRACES_EXPORTER", "console")
    environment.setenv("OTEL_TRACES_EXPORTER", "none")

    assert load_settings(ServiceSettings).traces_exporter == "none"


def test_an_unknown_exporter_is_refused_naming_the_variable(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("OTEL_TRACES_EXPORTER", "zipkin")

    with pytest.raises(SettingsError, match="OTEL_TRACES_EXPORTER"):
        load_settings(ServiceSettings)


def test_an_endpoint_that_is_not_a_url_is_refused_naming_the_variable(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "collector")

    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        load_settings(ServiceSettings)
