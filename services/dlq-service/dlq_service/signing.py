"""The dlq-service's mark on each retry: an HMAC over entry and retry that nobody without its key can make.

A retried message carries entry, retry and signature; its outcome (handled, or dead-lettered again) is believed
only when the signature checks, so no publisher can resolve, reopen or rewrite an entry by naming it.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid

from pydantic import SecretStr


class RetrySigner:
    def __init__(self, key: SecretStr) -> None:
        self._key = key.get_secret_value().encode()

    def sign(self, entry_id: uuid.UUID, retry_id: int) -> str:
        return hmac.new(self._key, f"{entry_id}:{retry_id}".encode(), hashlib.sha256).hexdigest()

    def verify(self, entry_id: uuid.UUID, retry_id: int, signature: str) -> bool:
        # As bytes: compare_digest refuses str with non-ASCII characters, and a header may hold anything.
        return hmac.compare_digest(self.sign(entry_id, retry_id).encode(), signature.encode("utf-8", "replace"))
