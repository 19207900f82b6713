"""The dead-letter store: one entry per failed message, every failure of it (events), every retry, and redrives.

The first columns are the plan's `dead_letter_queue`, column for column; the rest is what capture, grouping
and retry need. The raw body is bytea: jsonb and text reject NUL characters and invalid UTF-8, and a dead
letter must never be lost for that.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Text,
    Uuid,
    cast,
    column,
    false,
    func,
    literal,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, REGCONFIG, TSQUERY, TSVECTOR
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine
from sqlmodel import Field, SQLModel

from libs.db.tables.columns import created_now, one_of, serial_pk, stored_enum, timestamp, uuid_pk


class DeadLetterReason(enum.StrEnum):
    """`error` comes from our consumer policy; the others are RabbitMQ's own `x-death` reasons."""

    error = "error"
    rejected = "rejected"
    expired = "expired"
    maxlen = "maxlen"
    delivery_limit = "delivery_limit"


class DeadLetterStatus(enum.StrEnum):
    failed = "failed"
    retrying = "retrying"
    resolved = "resolved"


class Resolution(enum.StrEnum):
    manual = "manual"
    retry_succeeded = "retry_succeeded"


class RetryOutcome(enum.StrEnum):
    sent = "sent"
    publish_failed = "publish_failed"
    succeeded = "succeeded"
    failed_again = "failed_again"


class RedriveStatus(enum.StrEnum):
    running = "running"
    completed = "completed"
    cancelled = "cancelled"


class RedriveItemState(enum.StrEnum):
    pending = "pending"
    sent = "sent"
    failed = "failed"
    skipped = "skipped"


SEARCH_CONFIG = "simple"
"""The free-text index's text search configuration: words lower-cased, no stemming, no stop words; PostgreSQL's
parser keeps an email address, a host name or a hyphenated word whole (beside the hyphenated word's parts)."""


def _constant(value: str, type_: TypeEngine[Any]) -> ColumnElement[Any]:
    return cast(literal(value), type_)


def search_document(error_message: ColumnElement[Any], payload: ColumnElement[Any]) -> ColumnElement[Any]:
    """The words free text finds an entry by: the error message's and the payload's string and number values
    (not its keys), as one tsvector (the stored column `search_words`)."""
    config = _constant(SEARCH_CONFIG, REGCONFIG())
    message = func.to_tsvector(config, func.coalesce(error_message, _constant("", Text())))
    values = func.jsonb_to_tsvector(
        config, func.coalesce(payload, _constant("{}", JSONB())), _constant('["string", "numeric"]', JSONB())
    )
    return message.op("||", return_type=TSVECTOR())(values)


def search_query(words: str | ColumnElement[str]) -> ColumnElement[Any]:
    """Every word of `words`, as the parser splits them, whole (an address or a hyphenated word stays one)."""
    return func.plainto_tsquery(_constant(SEARCH_CONFIG, REGCONFIG()), words, type_=TSQUERY())


def _entry_fk() -> Any:
    return Field(sa_column=Column(Uuid, ForeignKey("dead_letter_queue.id", ondelete="CASCADE"), nullable=False))


class DeadLetter(SQLModel, table=True):
    __tablename__ = "dead_letter_queue"
    __table_args__ = (
        one_of("reason", DeadLetterReason, "dead_letter_queue_reason_check"),
        one_of("status", DeadLetterStatus, "dead_letter_queue_status_check"),
        Index("idx_dlq_queue_failed_at", "queue_name", text("failed_at DESC")),
        Index("idx_dlq_resolved", "resolved", text("failed_at DESC")),
        Index("idx_dlq_message_id", "message_id"),
        # The list's keyset order, alone and behind each column the list filters on by equality: every page
        # of every filter reads its rows in order from one index and stops at the page's end.
        Index("idx_dlq_list", text("created_at DESC"), text("id DESC")),
        *(
            Index(f"idx_dlq_{name}_list", column, text("created_at DESC"), text("id DESC"))
            for name, column in (
                ("queue", "queue_name"),
                ("status", "status"),
                ("reason", "reason"),
                ("error_type", "error_type"),
                ("fingerprint", "fingerprint"),
                ("service", "service"),
            )
        ),
        # Each run of 16 blocks' earliest and latest arrival (entries are appended as they arrive): a search for
        # several words ANDs its words' posting lists with a time window's blocks, whatever the window holds.
        Index(
            "idx_dlq_created_brin",
            "created_at",
            postgresql_using="brin",
            # Not autosummarize: at capture's rate PostgreSQL logs most of its requests as dropped (migration 0013).
            postgresql_with={"pages_per_range": 16},
        ),
        # A time window is read from its newest failure backwards.
        Index("idx_dlq_last_failed", text("last_failed_at DESC"), text("id DESC")),
        # Free text as substrings, when no entry has the words: every word an ILIKE '%word%' on the error message or the
        # payload's JSON text.
        Index(
            "idx_dlq_error_message_trgm",
            "error_message",
            postgresql_using="gin",
            postgresql_ops={"error_message": "gin_trgm_ops"},
        ),
        Index(
            "idx_dlq_payload_trgm",
            cast(column("payload"), Text).label("payload_text"),
            postgresql_using="gin",
            postgresql_ops={"payload_text": "gin_trgm_ops"},
        ),
        # Free text as words: one GIN lookup per word, however common its trigrams (an address's `@example.com`).
        Index("idx_dlq_search", "search_words", postgresql_using="gin"),
        # A failure group's newest and oldest unresolved failure, one index probe each.
        Index(
            "idx_dlq_group_latest",
            "queue_name",
            "fingerprint",
            text("last_failed_at DESC NULLS LAST"),
            postgresql_where=text(f"status <> '{DeadLetterStatus.resolved.value}'"),
        ),
        Index(
            "idx_dlq_group_first",
            "queue_name",
            "fingerprint",
            "first_failed_at",
            postgresql_where=text(f"status <> '{DeadLetterStatus.resolved.value}'"),
        ),
    )

    id: uuid.UUID = uuid_pk()
    queue_name: str = Field(max_length=100)
    job_id: str | None = Field(default=None, max_length=100)
    payload: Any | None = Field(default=None, sa_type=JSONB)
    error_message: str | None = Field(default=None, sa_type=Text)
    stack_trace: str | None = Field(default=None, sa_type=Text)
    attempts: int | None = Field(default=None, sa_type=Integer)
    failed_at: datetime = timestamp(nullable=False)
    # The plan's flag, kept in step with `status` (resolved <=> status = 'resolved').
    resolved: bool | None = Field(default=False, sa_type=Boolean, sa_column_kwargs={"server_default": false()})
    resolved_at: datetime | None = timestamp()
    resolved_by: uuid.UUID | None = Field(default=None, foreign_key="users.id")
    created_at: datetime = created_now()
    original_exchange: str | None = Field(default=None, max_length=255)
    original_routing_key: str | None = Field(default=None, max_length=255)
    message_id: str | None = Field(default=None, max_length=200)
    correlation_id: str | None = Field(default=None, max_length=128)
    headers: dict[str, Any] = Field(
        default_factory=dict, sa_type=JSONB, sa_column_kwargs={"server_default": text("'{}'")}
    )
    raw_body: bytes = Field(default=b"", sa_type=LargeBinary, sa_column_kwargs={"server_default": text("'\\x'")})
    reason: DeadLetterReason = Field(
        default=DeadLetterReason.error,
        sa_type=stored_enum(DeadLetterReason, 32),
        sa_column_kwargs={"server_default": DeadLetterReason.error.value},
    )
    error_type: str | None = Field(default=None, max_length=200)
    fingerprint: str | None = Field(default=None, max_length=64)
    service: str | None = Field(default=None, max_length=100)
    first_failed_at: datetime | None = timestamp()
    last_failed_at: datetime | None = timestamp()
    retry_count: int = Field(default=0, sa_type=Integer, sa_column_kwargs={"server_default": text("0")})
    status: DeadLetterStatus = Field(
        default=DeadLetterStatus.failed,
        sa_type=stored_enum(DeadLetterStatus, 16),
        sa_column_kwargs={"server_default": DeadLetterStatus.failed.value},
    )
    resolution: Resolution | None = Field(default=None, sa_type=stored_enum(Resolution, 32))
    message_type: str | None = Field(default=None, max_length=100)
    content_type: str | None = Field(default=None, max_length=100)
    # Stored, not only indexed: a page of a common word is read newest first from the list's index, testing each
    # entry's words on the way, and computing them again per entry costs about 80 times more than reading them.
    search_words: str | None = Field(
        default=None,
        sa_column=Column(
            TSVECTOR(), Computed(search_document(column("error_message"), column("payload")), persisted=True)
        ),
    )


class DeadLetterGroupCount(SQLModel, table=True):
    """Unresolved entries per failure group (queue and fingerprint; '' for an entry without one), with their
    earliest and latest failure and the latest one's error, kept by statement-level triggers on dead_letter_queue
    (migrations 0009 and 0012): every writer, whichever service, keeps it right, and a batch of captures touches
    each of its groups once. A group whose entries all resolved stays, at 0 and without times, so a queue's gauge
    reads 0 rather than vanishing. The group of entries without a fingerprint has no times."""

    __tablename__ = "dead_letter_groups"

    queue_name: str = Field(max_length=100, primary_key=True)
    fingerprint: str = Field(max_length=64, primary_key=True)
    unresolved: int = Field(default=0, sa_type=Integer, sa_column_kwargs={"server_default": text("0")})
    first_seen: datetime | None = timestamp()
    last_seen: datetime | None = timestamp()
    error_type: str | None = Field(default=None, max_length=200)
    sample_error: str | None = Field(default=None, sa_type=Text)


class DeadLetterEvent(SQLModel, table=True):
    """One row per dead letter received: its dedupe key recognises a redelivered one."""

    __tablename__ = "dead_letter_events"
    __table_args__ = (Index("idx_dlq_events_entry", "entry_id", "id"),)

    id: int = serial_pk()
    entry_id: uuid.UUID = _entry_fk()
    dedupe_key: str = Field(max_length=64, unique=True)
    reason: DeadLetterReason = Field(sa_type=stored_enum(DeadLetterReason, 32))
    error_type: str | None = Field(default=None, max_length=200)
    error_message: str | None = Field(default=None, sa_type=Text)
    attempts: int | None = Field(default=None, sa_type=Integer)
    failed_at: datetime = timestamp(nullable=False)
    received_at: datetime = created_now()


class Redrive(SQLModel, table=True):
    """A bulk retry: its selection is fixed when it starts (redrive_items), then sent at its rate."""

    __tablename__ = "redrives"
    __table_args__ = (
        CheckConstraint("rate_per_second > 0", name="redrives_rate_per_second_check"),
        one_of("status", RedriveStatus, "redrives_status_check"),
    )

    id: uuid.UUID = uuid_pk()
    requested_by: str = Field(max_length=200)
    selection: dict[str, Any] = Field(sa_type=JSONB)
    rate_per_second: int = Field(sa_type=Integer)
    status: RedriveStatus = Field(
        default=RedriveStatus.running,
        sa_type=stored_enum(RedriveStatus, 16),
        sa_column_kwargs={"server_default": RedriveStatus.running.value},
    )
    selected: int = Field(default=0, sa_type=Integer, sa_column_kwargs={"server_default": text("0")})
    sent: int = Field(default=0, sa_type=Integer, sa_column_kwargs={"server_default": text("0")})
    failed: int = Field(default=0, sa_type=Integer, sa_column_kwargs={"server_default": text("0")})
    skipped: int = Field(default=0, sa_type=Integer, sa_column_kwargs={"server_default": text("0")})
    created_at: datetime = created_now()
    finished_at: datetime | None = timestamp()


class RedriveItem(SQLModel, table=True):
    __tablename__ = "redrive_items"
    __table_args__ = (one_of("state", RedriveItemState, "redrive_items_state_check"),)

    redrive_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("redrives.id", ondelete="CASCADE"), primary_key=True)
    )
    position: int = Field(sa_type=Integer, primary_key=True, sa_column_kwargs={"autoincrement": False})
    entry_id: uuid.UUID = _entry_fk()
    state: RedriveItemState = Field(
        default=RedriveItemState.pending,
        sa_type=stored_enum(RedriveItemState, 16),
        sa_column_kwargs={"server_default": RedriveItemState.pending.value},
    )


class DeadLetterRetry(SQLModel, table=True):
    """Every republish of an entry, single or part of a redrive, and what became of it."""

    __tablename__ = "dead_letter_retries"
    __table_args__ = (
        one_of("outcome", RetryOutcome, "dead_letter_retries_outcome_check"),
        Index("idx_dlq_retries_entry", "entry_id", "id"),
    )

    id: int = serial_pk()
    entry_id: uuid.UUID = _entry_fk()
    redrive_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(Uuid, ForeignKey("redrives.id", ondelete="SET NULL"), nullable=True)
    )
    requested_by: str = Field(max_length=200)
    requested_at: datetime = created_now()
    outcome: RetryOutcome = Field(
        default=RetryOutcome.sent,
        sa_type=stored_enum(RetryOutcome, 16),
        sa_column_kwargs={"server_default": RetryOutcome.sent.value},
    )
    outcome_at: datetime | None = timestamp()
