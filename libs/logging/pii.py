"""Contact data masked wherever it hides in text: every email address and phone number, whatever field holds it.

Masking goes by what a value looks like, not by field names: an SMTP refusal names its recipient inside an error
message, and a payload may carry a phone number under any key. A masked value keeps a hint for whoever reads
the log (the first letters of an address, its top-level domain, a phone number's last two digits), never the
whole value.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any, TypeVar, cast

# An email address: a local part of [A-Za-z0-9._%+-], `@`, a domain label and one or more `.label` suffixes.
_LOCAL_PART = frozenset(string.ascii_letters + string.digits + "._%+-")
_DOMAIN = re.compile(r"([A-Za-z0-9\-]+)((?:\.[A-Za-z0-9\-]+)+)")
# A run of digits with the separators phone numbers are written with; never part of a longer token (a UUID, a
# path, a number with more digits), so identifiers and counts stay readable. `_is_phone` then decides.
# Written as: one of `+`, `(` or a digit, not preceded by [\w.+/-]; after a `+` an optional `(`, then a digit
# (`\+?\(?\d`); then the run. Beginning with a character class lets the regex engine skip to the next `+`, `(`
# or digit instead of trying the whole pattern at every character (a quarter less time on a typical payload).
_PHONE_CANDIDATE = re.compile(
    r"[+(\d](?<![\w.+/-][+(\d])(?:(?<=\+)\(?\d|(?<=\()\d|(?<=\d))[\d ().\-]{5,22}\d(?![\w/-]|\.\d)"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_DECIMAL = re.compile(r"^\d+\.\d+$")
_SEPARATED = re.compile(r"[ ().\-]")

Value = TypeVar("Value")


def _is_phone(candidate: str) -> bool:
    digits = sum(character.isdigit() for character in candidate)
    if not 7 <= digits <= 15:
        return False
    if _DATE.match(candidate) or _IPV4.match(candidate) or _DECIMAL.match(candidate):
        return False
    # A bare run of digits is a phone number only when it is as long as one with an area code: shorter bare
    # numbers are counts and amounts.
    return candidate.startswith("+") or bool(_SEPARATED.search(candidate)) or digits >= 10


def _mask_phone(match: re.Match[str]) -> str:
    candidate = match.group(0)
    if not _is_phone(candidate):
        return candidate
    return "***" + "".join(character for character in candidate if character.isdigit())[-2:]


def _mask_emails(text: str) -> str:
    """Every address masked as `a***@e***.com`, found from its `@`: a local part cannot hold one, so it runs back
    from the `@` (to where the previous address ended at the earliest), and the domain follows. (One regular
    expression for the whole address, tried from every character, was quadratic in a run of letters and digits
    such as an id, and most of a payload's masking time.)"""
    parts: list[str] = []
    done = 0
    at = text.find("@")
    while at != -1:
        start = at
        while start > done and text[start - 1] in _LOCAL_PART:
            start -= 1
        domain = _DOMAIN.match(text, at + 1) if start < at else None
        if domain is None:
            at = text.find("@", at + 1)
            continue
        top_level = domain.group(2).rsplit(".", 1)[-1]
        parts += [text[done:start], f"{text[start]}***@{domain.group(1)[:1]}***.{top_level}"]
        done = domain.end()
        at = text.find("@", done)
    return "".join([*parts, text[done:]]) if parts else text


def mask_pii(text: str) -> str:
    """The text with every email address (`a***@e***.com`) and phone number (`***00`) masked."""
    if "@" in text:
        text = _mask_emails(text)
    return _PHONE_CANDIDATE.sub(_mask_phone, text)


def mask_pii_in(value: Value) -> Value:
    """Every string inside a JSON-like value (mappings, lists, tuples) masked; keys and other scalars kept."""
    masked: Any
    if isinstance(value, str):
        masked = mask_pii(value)
    elif isinstance(value, Mapping):
        masked = {key: mask_pii_in(item) for key, item in value.items()}
    elif isinstance(value, list):
        masked = [mask_pii_in(item) for item in value]
    elif isinstance(value, tuple):
        masked = tuple(mask_pii_in(item) for item in value)
    else:
        masked = value
    return cast(Value, masked)
