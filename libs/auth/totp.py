"""Time-based one-time passwords (RFC 6238), each code accepted once, their secrets sealed at rest."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

import pyotp
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import Field, SecretStr, field_validator

from libs.settings import refuse_placeholder

# What pyotp.random_base32 makes, and so what a secret stored before sealing looks like. A sealed one is a
# Fernet token, which always has lower-case letters: the two cannot be mistaken for each other.
_PLAIN_SECRET = re.compile(r"^[A-Z2-7]+=*$")


class UnreadableSecret(Exception):
    """A stored TOTP secret that none of the configured keys opens: the key was changed without keeping the old."""


class TotpSettingsMixin:
    """Mixed into the settings of whatever reads or writes users' TOTP secrets (the gateway and its CLI)."""

    totp_encryption_key: SecretStr = Field(
        description="Fernet key(s) sealing TOTP secrets at rest, comma-separated: the first seals, every one opens "
        "(add the new key first to rotate). Make one with `python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())'`."
    )

    @field_validator("totp_encryption_key")
    @classmethod
    def _valid_fernet_keys(cls, value: SecretStr) -> SecretStr:
        refuse_placeholder(value)
        TotpSecrets.from_keys(value.get_secret_value())
        return value


class TotpSecrets:
    """Seals TOTP secrets with Fernet (AES-128-CBC and HMAC-SHA256, authenticated) before they are stored."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    @classmethod
    def from_keys(cls, keys: str) -> TotpSecrets:
        """ValueError naming the expected form when a key is not a Fernet key."""
        parts = [part.strip() for part in keys.split(",") if part.strip()]
        try:
            return cls([part.encode() for part in parts] or [b""])
        except ValueError:
            raise ValueError("must be Fernet keys (32 url-safe base64-encoded bytes each), comma-separated") from None

    @classmethod
    def from_settings(cls, settings: TotpSettingsMixin) -> TotpSecrets:
        return cls.from_keys(settings.totp_encryption_key.get_secret_value())

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret; a value stored before sealing (plain base32) is returned as it is."""
        if not is_sealed(stored):
            return stored
        try:
            return self._fernet.decrypt(stored.encode()).decode()
        except InvalidToken:
            raise UnreadableSecret("no configured TOTP_ENCRYPTION_KEY opens this secret") from None


def is_sealed(stored: str) -> bool:
    return _PLAIN_SECRET.match(stored) is None


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, email: str, issuer: str = "fmhl-ops") -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def matching_totp_step(secret: str, code: str, *, now: float | None = None, window: int = 1) -> int | None:
    """The time step the code belongs to (within ±window steps), or None.

    pyotp's verify() would accept the same code twice; the caller stores the step and accepts only a later one.
    """
    if not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    moment = time.time() if now is None else now
    current = int(moment) // totp.interval
    for step in range(current - window, current + window + 1):
        if pyotp.utils.strings_equal(totp.generate_otp(step), code):
            return step
    return None
