"""Shared fixtures: the real RabbitMQ and PostgreSQL started by `deploy/local/stack.sh test`.

Tests run against their own vhost (`fmhl-test`) and database (`fmhl_test`), so a running stack is untouched.
"""

from __future__ import annotations

import os

import pytest


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with `bash deploy/local/stack.sh test`", pytrace=False)
    return value


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    return _required("TEST_RABBITMQ_URL")


@pytest.fixture(scope="session")
def database_url() -> str:
    return _required("TEST_DATABASE_URL")


TEST_JWT_SECRET = "test-only-signing-key-0123456789abcdef"


@pytest.fixture(scope="session")
def service_env(rabbitmq_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for a service process or settings object pointed at the test vhost and database."""
    return {
        "RABBITMQ_URL": rabbitmq_url,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "DEBUG",
        "JWT_SECRET": TEST_JWT_SECRET,
        "EXPORT_DIR": str(tmp_path_factory.mktemp("exports")),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": os.environ.get("TEST_SMTP_PORT", "2626"),
        "RABBITMQ_MANAGEMENT_URL": os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672"),
    }
