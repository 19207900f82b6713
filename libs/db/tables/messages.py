"""What consumers remember about messages they handled: processed ids (idempotency) and sent mail."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import Text
from sqlmodel import Field, SQLModel

from libs.db.tables.columns import created_now, one_of, stored_enum, uuid_pk


class EmailStatus(enum.StrEnum):
    sent = "sent"
    failed = "failed"


class ProcessedMessage(SQLModel, table=True):
    __tablename__ = "processed_messages"

    consumer: str = Field(max_length=100, primary_key=True)
    message_id: str = Field(max_length=200, primary_key=True)
    processed_at: datetime = created_now()


class EmailLog(SQLModel, table=True):
    __tablename__ = "email_log"
    __table_args__ = (one_of("status", EmailStatus, "email_log_status_check"),)

    id: uuid.UUID = uuid_pk()
    job_id: str = Field(max_length=200, unique=True)
    smtp_message_id: str | None = Field(default=None, max_length=500)
    to_address: str = Field(max_length=320)
    template: str = Field(max_length=64)
    status: EmailStatus = Field(sa_type=stored_enum(EmailStatus, 16))
    smtp_response: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = created_now()
