"""Providers (who buy leads, with a balance in cents) and their subscriptions (what they buy, at what price)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, Text, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import Field, SQLModel

from libs.db.tables.columns import created_now, one_of, stored_enum, timestamp, uuid_pk


class SubscriptionStatus(enum.StrEnum):
    active = "active"
    paused = "paused"
    cancelled = "cancelled"


class PausedReason(enum.StrEnum):
    insufficient_balance = "insufficient_balance"


class Provider(SQLModel, table=True):
    __tablename__ = "providers"
    __table_args__ = (
        CheckConstraint("balance_cents >= 0", name="providers_balance_cents_check"),
        CheckConstraint("low_balance_threshold_cents >= 0", name="providers_low_balance_threshold_cents_check"),
    )

    id: uuid.UUID = uuid_pk()
    name: str = Field(max_length=200)
    email: str = Field(max_length=320)
    balance_cents: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": text("0")})
    low_balance_threshold_cents: int = Field(
        default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": text("0")}
    )
    created_at: datetime = created_now()


class Subscription(SQLModel, table=True):
    __tablename__ = "subscriptions"
    __table_args__ = (
        CheckConstraint("price_cents > 0", name="subscriptions_price_cents_check"),
        CheckConstraint("daily_cap IS NULL OR daily_cap > 0", name="subscriptions_daily_cap_check"),
        one_of("status", SubscriptionStatus, "subscriptions_status_check"),
        Index("idx_subscriptions_match", "category", "status"),
    )

    id: uuid.UUID = uuid_pk()
    provider_id: uuid.UUID = Field(foreign_key="providers.id")
    category: str = Field(max_length=100)
    zip_codes: list[str] = Field(
        default_factory=list, sa_type=ARRAY(Text), sa_column_kwargs={"server_default": text("'{}'")}
    )
    zip_prefix: str | None = Field(default=None, max_length=10)
    price_cents: int = Field(sa_type=BigInteger)
    daily_cap: int | None = Field(default=None, sa_type=Integer)
    status: SubscriptionStatus = Field(
        default=SubscriptionStatus.active,
        sa_type=stored_enum(SubscriptionStatus, 16),
        sa_column_kwargs={"server_default": SubscriptionStatus.active.value},
    )
    paused_reason: PausedReason | None = Field(default=None, sa_type=stored_enum(PausedReason, 64))
    paused_until: datetime | None = timestamp()
    last_assigned_at: datetime | None = timestamp()
    created_at: datetime = created_now()
