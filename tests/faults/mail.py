"""The SMTP sink of the fault suite: keeps which email job each accepted mail belongs to, and can act the moment
it accepts one (the email-worker fault kills the sender then)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class Accepted:
    job: str
    to: str
    at: float


@dataclass
class MailSink:
    accepted: list[Accepted] = field(default_factory=list)
    on_accept: Callable[[Accepted], None] | None = None
    """Runs once the sink holds the mail and before the sender hears `250`: the window between SMTP
    acceptance and the sender's record of it."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content: Any = envelope.original_content or envelope.content
        parsed = message_from_bytes(content if isinstance(content, bytes) else str(content).encode())
        accepted = Accepted(str(parsed["X-Fmhl-Job"]), str(parsed["To"]), time.time())
        self.accepted.append(accepted)
        if self.on_accept is not None:
            self.on_accept(accepted)
        return "250 accepted"

    def jobs(self, recipients: set[str]) -> Counter[str]:
        """How many times each job's mail was accepted, for mail to these addresses."""
        return Counter(mail.job for mail in list(self.accepted) if mail.to in recipients)


def start_sink(port: int) -> tuple[MailSink, Controller]:
    sink = MailSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    return sink, controller
