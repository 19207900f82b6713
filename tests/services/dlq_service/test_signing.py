"""The retry signature: only the key's holder can make one, for exactly one entry and retry."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from dlq_service.settings import Settings
from dlq_service.signing import RetrySigner
from libs.settings import SettingsError, load_settings

KEY = SecretStr("a-retry-signing-key-only-this-test-uses-0123")


def test_a_signature_checks_for_its_own_entry_and_retry() -> None:
    signer, entry = RetrySigner(KEY), uuid.uuid4()
    assert signer.verify(entry, 3, signer.sign(entry, 3))


@pytest.mark.parametrize("change", ["entry", "retry", "key"])
def test_a_signature_does_not_check_for_another_entry_retry_or_key(change: str) -> None:
    signer, entry = RetrySigner(KEY), uuid.uuid4()
    signature = signer.sign(entry, 3)
    other_key = RetrySigner(SecretStr("another-retry-signing-key-of-32-chars-at-least"))
    assert not {
        "entry": lambda: signer.verify(uuid.uuid4(), 3, signature),
        "retry": lambda: signer.verify(entry, 4, signature),
        "key": lambda: other_key.verify(entry, 3, signature),
    }[change]()


@pytest.mark.parametrize("forged", ["", "0" * 64, "é" * 64, "\udcff" * 64, "z" * 10_000])
def test_a_forged_signature_of_any_shape_is_refused_without_an_error(forged: str) -> None:
    assert not RetrySigner(KEY).verify(uuid.uuid4(), 1, forged)


def _settings(**overrides: str) -> Settings:
    return load_settings(
        Settings,
        database_url="postgresql+asyncpg://fmhl:not-used-by-this-test@127.0.0.1:1/none",
        rabbitmq_url="amqp://fmhl:not-used-by-this-test@127.0.0.1:1/none",
        rabbitmq_management_url="http://fmhl:not-used-by-this-test@127.0.0.1:1",
        jwt_secret="a-signing-key-only-this-test-ever-uses-0123",
        **overrides,
    )


@pytest.mark.parametrize(
    ("key", "complaint"),
    [(None, "DLQ_RETRY_SIGNING_KEY is required"), ("too-short", "DLQ_RETRY_SIGNING_KEY Value should have at least 32"),
     ("changeme" * 5, "DLQ_RETRY_SIGNING_KEY is a placeholder")],
    ids=["missing", "short", "placeholder"],
)  # fmt: skip
def test_the_service_does_not_start_without_a_real_signing_key(
    key: str | None, complaint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DLQ_RETRY_SIGNING_KEY", raising=False)
    with pytest.raises(SettingsError, match=complaint):
        _settings(**({} if key is None else {"dlq_retry_signing_key": key}))
