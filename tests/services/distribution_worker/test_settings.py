"""distribution-worker's pool: a connection for every handler that may run at once, unless told otherwise."""

import pytest

from distribution_worker.settings import Settings
from libs.settings import load_settings

REQUIRED = {
    "DATABASE_URL": "postgresql+asyncpg://u:real-password@localhost/db",
    "RABBITMQ_URL": "amqp://u:real-password@localhost/vhost",
}


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    for name in ("PREFETCH", "DB_POOL_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_pool_holds_a_connection_per_handler_by_default(environment: pytest.MonkeyPatch) -> None:
    settings = load_settings(Settings)
    assert settings.db_pool_size == settings.prefetch == 10


def test_the_pool_follows_a_larger_prefetch(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("PREFETCH", "40")
    assert load_settings(Settings).db_pool_size == 40


def test_a_pool_size_set_explicitly_wins(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("PREFETCH", "40")
    environment.setenv("DB_POOL_SIZE", "4")
    assert load_settings(Settings).db_pool_size == 4


def test_a_prefetch_beyond_the_pools_limit_keeps_the_largest_pool(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("PREFETCH", "500")
    settings = load_settings(Settings)
    assert (settings.prefetch, settings.db_pool_size) == (500, 100)
