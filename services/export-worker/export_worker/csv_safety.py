"""CSV cells that a spreadsheet would run as a formula are neutralised (OWASP CSV injection)."""

from decimal import Decimal

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    # A number is never a formula, and a quote would turn a negative amount (or a SUM's Decimal) into text.
    if isinstance(value, int | float | Decimal):
        return text
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text
