"""The workers whose handlers each hold a database connection (distribution-worker, email-worker): a connection
for every handler that may run at once, unless told otherwise."""

import pytest

from distribution_worker.settings import Settings as DistributionSettings
from email_worker.settings import Settings as EmailSettings
from libs.settings import PoolPerHandlerSettings, load_settings

pytestmark = pytest.mark.parametrize("settings_class", [DistributionSettings, EmailSettings])

REQUIRED = {
    "DATABASE_URL": "postgresql+asyncpg://u:real-password@localhost/db",
    "RABBITMQ_URL": "amqp://u:real-password@localhost/vhost",
    "SMTP_HOST": "localhost",
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    for name in ("PREFETCH", "DB_POOL_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_pool_holds_a_connection_per_handler_by_default(
    environment: pytest.MonkeyPatch, settings_class: type[PoolPerHandlerSettings]
) -> None:
    settings = load_settings(settings_class)
    assert settings.db_pool_size == settings.prefetch == 10


def test_the_pool_follows_a_larger_prefetch(
    environment: pytest.MonkeyPatch, settings_class: type[PoolPerHandlerSettings]
) -> None:
    environment.setenv("PREFETCH", "40")
    assert load_settings(settings_class).db_pool_size == 40


def test_a_pool_size_set_explicitly_wins(
    environment: pytest.MonkeyPatch, settings_class: type[PoolPerHandlerSettings]
) -> None:
    environment.setenv("PREFETCH", "40")
    environment.setenv("DB_POOL_SIZE", "4")
    assert load_settings(settings_class).db_pool_size == 4


def test_a_prefetch_beyond_the_pools_limit_keeps_the_largest_pool(
    environment: pytest.MonkeyPatch, settings_class: type[PoolPerHandlerSettings]
) -> None:
    environment.setenv("PREFETCH", "500")
    settings = load_settings(settings_class)
    assert (settings.prefetch, settings.db_pool_size) == (500, 100)
