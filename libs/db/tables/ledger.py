"""Money: every change to a provider's balance is one ledger entry; refunds are the credits of bad leads."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, text
from sqlmodel import Field, SQLModel

from libs.db.tables.columns import created_now, one_of, serial_pk, stored_enum, uuid_pk


class LedgerKind(enum.StrEnum):
    top_up = "top_up"
    lead_charge = "lead_charge"
    refund = "refund"
    adjustment = "adjustment"


class Refund(SQLModel, table=True):
    __tablename__ = "refunds"
    __table_args__ = (CheckConstraint("amount_cents > 0", name="refunds_amount_cents_check"),)

    id: uuid.UUID = uuid_pk()
    bad_lead_report_id: uuid.UUID = Field(foreign_key="bad_lead_reports.id", unique=True)
    assignment_id: uuid.UUID = Field(foreign_key="assignments.id", unique=True)
    provider_id: uuid.UUID = Field(foreign_key="providers.id")
    amount_cents: int = Field(sa_type=BigInteger)
    created_at: datetime = created_now()


class LedgerEntry(SQLModel, table=True):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        one_of("kind", LedgerKind, "ledger_entries_kind_check"),
        CheckConstraint("amount_cents <> 0", name="ledger_entries_amount_cents_check"),
        Index("idx_ledger_provider", "provider_id", "created_at"),
        # One charge per assignment and one credit per refund, whatever is redelivered.
        Index(
            "idx_ledger_one_charge",
            "assignment_id",
            unique=True,
            postgresql_where=text(f"kind = '{LedgerKind.lead_charge.value}'"),
        ),
        Index(
            "idx_ledger_one_refund",
            "refund_id",
            unique=True,
            postgresql_where=text(f"kind = '{LedgerKind.refund.value}'"),
        ),
    )

    id: int = serial_pk()
    provider_id: uuid.UUID = Field(foreign_key="providers.id")
    kind: LedgerKind = Field(sa_type=stored_enum(LedgerKind, 16))
    # Signed: credits positive, charges negative.
    amount_cents: int = Field(sa_type=BigInteger)
    assignment_id: uuid.UUID | None = Field(default=None, foreign_key="assignments.id")
    refund_id: uuid.UUID | None = Field(default=None, foreign_key="refunds.id")
    created_at: datetime = created_now()
