"""CSV cells that a spreadsheet would run as a formula are neutralised (OWASP CSV injection)."""

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    if isinstance(value, int | float):
        return text
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text
