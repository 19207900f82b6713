"""A local SMTP server that keeps every mail: one .eml file each, plus index.jsonl listing them.

Recipients at a refused domain (SMTP_SINK_REFUSE, default refused.example) get a permanent 550, so a real
delivery failure can be produced on purpose. Usage: python deploy/local/smtp_sink.py DIR [PORT]
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from email import message_from_bytes
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class MailFolder:
    def __init__(self, folder: Path, refused_domains: set[str]) -> None:
        self.folder = folder
        self.refused_domains = refused_domains
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.rsplit("@", 1)[-1].lower() in self.refused_domains:
            return f"550 5.1.1 <{address}>: mailbox unavailable (refused by the local sink)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        content: Any = envelope.original_content or envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        parsed = message_from_bytes(raw)
        name = f"{time.time_ns()}.eml"
        (self.folder / name).write_bytes(raw)
        entry = {"file": name, "from": envelope.mail_from, "to": envelope.rcpt_tos, "subject": parsed["Subject"],
                 "message_id": parsed["Message-ID"], "job": parsed["X-Fmhl-Job"], "at": time.time()}  # fmt: skip
        with (self.folder / "index.jsonl").open("a") as index:
            index.write(json.dumps(entry) + "\n")
        return "250 Message accepted for delivery"


def main() -> None:
    folder = Path(sys.argv[1])
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 2525
    refused = {domain.strip().lower() for domain in os.environ.get("SMTP_SINK_REFUSE", "refused.example").split(",")}
    host = os.environ.get("SMTP_SINK_HOST", "127.0.0.1")
    controller = Controller(MailFolder(folder, refused), hostname=host, port=port)
    controller.start()
    print(f"smtp sink on {host}:{port}, mail in {folder}", flush=True)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()


if __name__ == "__main__":
    main()
