"""The mail as sent: what a reader's mail client decodes is exactly what was rendered, in any script, and a header
value cannot smuggle in a header of its own."""

from email import message_from_bytes, policy
from email.errors import HeaderParseError
from email.message import EmailMessage

import pytest

from email_worker.mailer import compose

SENDER = "fmhl-ops <no-reply@fmhl.local>"


def read_back(raw: bytes) -> EmailMessage:
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_an_ascii_mail_reads_back_as_rendered_with_its_job_and_message_id() -> None:
    message = compose(sender=SENDER, to="p@example.com", subject="Your export is ready", body="Export e-1 (3 rows).",
                      job_id="email:export_ready:e-1")  # fmt: skip
    parsed = read_back(message.raw)

    assert parsed["From"] == SENDER
    assert parsed["To"] == "p@example.com"
    assert parsed["Subject"] == "Your export is ready"
    assert parsed["X-Fmhl-Job"] == "email:export_ready:e-1"
    assert parsed["Message-ID"] == message.message_id
    assert message.message_id.endswith("@fmhl.local>")
    assert parsed.get_content().rstrip("\n") == "Export e-1 (3 rows)."


def test_a_subject_and_body_outside_ascii_read_back_unchanged() -> None:
    subject, body = "Votre solde est bas: 12,00 €", "Solde: 12,00 € — Zoë, 日本語, emoji 📬"
    parsed = read_back(compose(sender=SENDER, to="p@example.com", subject=subject, body=body, job_id="j").raw)

    assert parsed["Subject"] == subject
    assert parsed.get_content().rstrip("\n") == body


def test_a_long_subject_is_folded_and_reads_back_unchanged() -> None:
    subject = "Your export of every lead distributed in the last thirty days across all categories is ready now"
    message = compose(sender=SENDER, to="p@example.com", subject=subject, body="b", job_id="j")

    assert all(len(line) <= 78 for line in message.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"))
    assert read_back(message.raw)["Subject"] == subject


@pytest.mark.parametrize("field", ["to", "job_id", "subject"])
def test_a_header_value_with_an_embedded_header_is_refused(field: str) -> None:
    values = {"sender": SENDER, "to": "p@example.com", "subject": "s", "body": "b", "job_id": "j"}
    values[field] = f"{values[field]}\r\nBcc: someone-else@example.com"

    with pytest.raises(HeaderParseError):
        compose(**values)
