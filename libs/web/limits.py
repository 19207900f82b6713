"""Request limits taken from the schema: a string the API accepts always fits the column it is stored in."""

from __future__ import annotations

from typing import Any

from annotated_types import MaxLen


def fits_column(column: Any) -> MaxLen:
    """`Annotated[str, fits_column(Lead.category)]`: at most as long as the table field's `max_length`, so the
    limit is declared once (in libs/db/tables) and a longer value is a 400 naming the field, never a 500."""
    # VARCHAR(n), or SQLModel's AutoString(n) that stands for it.
    length = getattr(getattr(column, "type", None), "length", None)
    if not isinstance(length, int):
        raise TypeError(f"{column} is not a string column with a length")
    return MaxLen(length)
