"""Rate-limit hits shared by every replica: a limit that N gateways count together, not N times over."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CHAR, Index
from sqlmodel import Field, SQLModel

from libs.db.tables.columns import created_now, serial_pk, timestamp


class RateLimitHit(SQLModel, table=True):
    __tablename__ = "rate_limit_hits"
    __table_args__ = (
        Index("idx_rate_limit_hits_bucket", "bucket", "hit_at"),
        Index("idx_rate_limit_hits_expiry", "expires_at"),
    )

    id: int = serial_pk()
    # A digest of the limiter's scope and key: no e-mail address or client address is stored.
    bucket: str = Field(sa_type=CHAR(64))
    hit_at: datetime = created_now()
    expires_at: datetime = timestamp(nullable=False)
