"""CSV cells a spreadsheet would run as a formula get a leading quote; numbers and plain text pass unchanged."""

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from export_worker.csv_safety import safe_cell


@pytest.mark.parametrize("text", ["=HYPERLINK(evil)", "+1+2", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"])
def test_text_starting_like_a_formula_is_quoted(text: str) -> None:
    assert safe_cell(text) == "'" + text


@pytest.mark.parametrize("text", ["roofing", "a=b", "", "94107", "'already quoted"])
def test_plain_text_is_unchanged(text: str) -> None:
    assert safe_cell(text) == text


@pytest.mark.parametrize(("number", "shown"), [(-1500, "-1500"), (0, "0"), (-2.5, "-2.5"), (Decimal("-500"), "-500")])
def test_numbers_are_never_quoted_even_when_negative(number: float | Decimal, shown: str) -> None:
    assert safe_cell(number) == shown


def test_null_is_an_empty_cell() -> None:
    assert safe_cell(None) == ""


def test_other_values_are_written_as_their_text() -> None:
    at = datetime(2030, 1, 2, 3, 4, tzinfo=UTC)
    identifier = uuid.UUID(int=7)
    assert (safe_cell(at), safe_cell(identifier)) == (str(at), str(identifier))
