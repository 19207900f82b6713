"""Request limits: a string the API accepts fits the column it is stored in; an integer is a JSON integer."""

from __future__ import annotations

from typing import Annotated, Any

from annotated_types import MaxLen
from pydantic import BeforeValidator


def fits_column(column: Any) -> MaxLen:
    """`Annotated[str, fits_column(Lead.category)]`: at most as long as the table field's `max_length`, so the
    limit is declared once (in libs/db/tables) and a longer value is a 400 naming the field, never a 500."""
    # VARCHAR(n), or SQLModel's AutoString(n) that stands for it.
    length = getattr(getattr(column, "type", None), "length", None)
    if not isinstance(length, int):
        raise TypeError(f"{column} is not a string column with a length")
    return MaxLen(length)


def _json_integer(value: object) -> object:
    # Litestar validates bodies with strict=False, which overrides a field's own Strict(): refused here is what
    # lax mode would coerce (`true` to 1, `1.0` to 1, `"100"` to 100).
    if type(value) is not int:
        raise ValueError("must be a JSON integer, not a boolean, a decimal or a string")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_integer)]
