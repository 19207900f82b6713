"""Who may call the APIs: users (admins and providers' staff) and lead sources (API keys)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Integer, Text, Uuid, false, text
from sqlmodel import Field, SQLModel

from libs.db.tables.columns import created_now, one_of, stored_enum, timestamp, uuid_pk


class UserRole(enum.StrEnum):
    admin = "admin"
    provider = "provider"


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (one_of("role", UserRole, "users_role_check"),)

    id: uuid.UUID = uuid_pk()
    email: str = Field(max_length=320, unique=True)
    role: UserRole = Field(sa_type=stored_enum(UserRole, 16))
    password_hash: str = Field(sa_type=Text)
    # Sealed with the gateway's TOTP_ENCRYPTION_KEY (a Fernet token); a plain base32 secret from before sealing
    # is still read, and sealed at its next use.
    totp_secret: str | None = Field(default=None, sa_type=Text)
    totp_last_used_step: int | None = Field(default=None, sa_type=BigInteger)
    # Failed logins since the last success or lock; reaching the gateway's threshold locks the account until
    # `locked_until` (or an admin's unlock) and starts the count again.
    failed_logins: int = Field(default=0, sa_type=Integer, sa_column_kwargs={"server_default": text("0")})
    locked_until: datetime | None = timestamp()
    # Declared in the initial migration after `providers`, under its own constraint name.
    provider_id: uuid.UUID | None = Field(
        default=None, sa_column=Column(Uuid, ForeignKey("providers.id", name="users_provider_fk"), nullable=True)
    )
    created_at: datetime = created_now()


class LeadSource(SQLModel, table=True):
    __tablename__ = "lead_sources"

    id: uuid.UUID = uuid_pk()
    name: str = Field(max_length=200)
    # SHA-256 of the key: the key itself is shown once, at creation.
    api_key_hash: str = Field(sa_type=Text, unique=True)
    trusted: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    created_at: datetime = created_now()
