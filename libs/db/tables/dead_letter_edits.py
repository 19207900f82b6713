"""Edits of a dead letter's body before its retry: what it was, what it became, and the difference."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, ForeignKey, Index, LargeBinary, Text, Uuid
from sqlmodel import Field, SQLModel

from libs.db.tables.columns import created_now, serial_pk


class DeadLetterEdit(SQLModel, table=True):
    __tablename__ = "dead_letter_edits"
    __table_args__ = (Index("idx_dlq_edits_entry", "entry_id", "id"),)

    id: int = serial_pk()
    entry_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("dead_letter_queue.id", ondelete="CASCADE"), nullable=False)
    )
    edited_by: str = Field(max_length=200)
    edited_at: datetime = created_now()
    # The body before this edit (the captured one, or an earlier edit's) and the body sent with the retry.
    original_body: bytes = Field(sa_type=LargeBinary)
    edited_body: bytes = Field(sa_type=LargeBinary)
    diff: str = Field(sa_type=Text)
