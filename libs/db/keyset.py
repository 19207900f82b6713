"""Keyset (cursor) pagination on (created_at, id), newest first: pages stay stable while rows are inserted."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime


class BadCursor(ValueError):
    """The cursor was not one this API returned."""


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        created, _, identifier = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(created), uuid.UUID(identifier)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadCursor("cursor is not one this API returned") from error
