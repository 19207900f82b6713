"""The transactional outbox: events committed with the rows they announce, published afterwards by a relay."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, LargeBinary
from sqlmodel import Field, SQLModel

from libs.db.tables.columns import created_now, serial_pk


class OutboxMessage(SQLModel, table=True):
    """One event waiting for the broker's confirm. The relay deletes the row once confirmed: what stays is what
    the broker has not taken yet, so the table is small and its size is the backlog."""

    __tablename__ = "outbox"
    __table_args__ = (Index("idx_outbox_due", "available_at", "id"),)

    id: int | None = serial_pk()
    message_id: str = Field(max_length=200)
    message_type: str = Field(max_length=100)
    """Also the routing key on the events exchange."""
    correlation_id: str = Field(max_length=200)
    traceparent: str | None = Field(default=None, max_length=55)
    """The W3C trace context of the request that staged it: the published message continues that trace."""
    body: bytes = Field(sa_type=LargeBinary)
    available_at: datetime = created_now()
    """When a relay may take it: now when staged; pushed on while a relay holds it (its lease, so a relay that
    died frees it by itself) and after a failed publish (the backoff)."""
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = created_now()
