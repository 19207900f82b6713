"""Who is calling: the subject, role, provider and authentication methods a verified token carries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

Role = Literal["admin", "provider"]


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    provider_id: uuid.UUID | None
    amr: tuple[str, ...]

    @property
    def has_mfa(self) -> bool:
        return "otp" in self.amr
