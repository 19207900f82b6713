"""Column shapes every table repeats: server-side ids and timestamps, and enum values stored as checked text.

Enums are stored as VARCHAR with a named CHECK constraint (not a PostgreSQL enum type), so adding a value is an
ordinary migration that swaps the constraint; reads come back as the Python enum.
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Enum, Uuid, func, text
from sqlmodel import Field

TIMESTAMPTZ = DateTime(timezone=True)


def uuid_pk() -> Any:
    return Field(
        default=None, primary_key=True, sa_type=Uuid, sa_column_kwargs={"server_default": text("gen_random_uuid()")}
    )


def serial_pk() -> Any:
    return Field(default=None, primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": True})


def created_now() -> Any:
    """A NOT NULL timestamp the database fills in (`DEFAULT NOW()`)."""
    return Field(default=None, nullable=False, sa_type=TIMESTAMPTZ, sa_column_kwargs={"server_default": func.now()})


def timestamp(*, nullable: bool = True) -> Any:
    return Field(default=None, nullable=nullable, sa_type=TIMESTAMPTZ)


def stored_enum(enum_class: type[enum.StrEnum], length: int) -> Enum:
    """VARCHAR(length) holding the enum's values; the CHECK constraint is declared by the table, by name."""
    return Enum(
        enum_class,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


def one_of(column: str, enum_class: type[enum.StrEnum], name: str) -> CheckConstraint:
    """`CHECK (column IN (...))` under the name PostgreSQL gave it when the migration created it."""
    values = ", ".join(f"'{member.value}'" for member in enum_class)
    return CheckConstraint(f"{column} IN ({values})", name=name)
