"""Sessions of the operations console: a browser's cookie names one row, which logout deletes."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CHAR, Column, ForeignKey, Index, Uuid
from sqlmodel import Field, SQLModel

from libs.db.tables.columns import created_now, timestamp


class ConsoleSession(SQLModel, table=True):
    __tablename__ = "console_sessions"
    __table_args__ = (
        Index("idx_console_sessions_user", "user_id"),
        Index("idx_console_sessions_expiry", "expires_at"),
    )

    # SHA-256 of the cookie's value: a copy of this table opens no session.
    token_hash: str = Field(sa_type=CHAR(64), primary_key=True)
    user_id: uuid.UUID = Field(sa_column=Column(Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False))
    created_at: datetime = created_now()
    # Moved on every request: a session unused for the idle timeout is over.
    last_seen_at: datetime = created_now()
    # The absolute end, whatever the activity.
    expires_at: datetime = timestamp(nullable=False)
