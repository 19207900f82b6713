"""Redrives as the console shows them: the history, newest first, and how far and how fast one has gone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from dlq_service.queries import selected
from dlq_service.retries import RedriveProgress
from libs.db.keyset import decode_cursor, encode_cursor
from libs.db.tables import Redrive, RedriveStatus

_NEWEST_FIRST = (col(Redrive.created_at).desc(), col(Redrive.id).desc())
_HISTORY = select(*selected(Redrive, RedriveProgress)).order_by(*_NEWEST_FIRST).limit(bindparam("limit"))


@dataclass(frozen=True)
class Pace:
    done: int
    """Sent, failed or skipped."""
    remaining: int
    percent: float
    rate_per_second: float | None
    """Achieved so far (done over the time since the start, or until it finished)."""
    eta_s: float | None
    """At the achieved rate; None once it is over or before anything is done."""


def pace(progress: RedriveProgress, now: datetime) -> Pace:
    done = progress.sent + progress.failed + progress.skipped
    remaining = max(progress.selected - done, 0) if progress.status == RedriveStatus.running else 0
    elapsed = ((progress.finished_at or now) - progress.created_at).total_seconds()
    rate = done / elapsed if done and elapsed > 0 else None
    percent = 100.0 if progress.selected == 0 else round(100.0 * done / progress.selected, 1)
    eta = remaining / rate if rate and remaining else None
    return Pace(done=done, remaining=remaining, percent=percent, rate_per_second=rate, eta_s=eta)


@dataclass(frozen=True)
class RedrivePage:
    items: list[RedriveProgress]
    next_cursor: str | None


async def history(engine: AsyncEngine, limit: int, cursor: str | None) -> RedrivePage:
    """Newest first; raises BadCursor for a cursor this page did not give."""
    query = _HISTORY
    if cursor:
        cursor_at, cursor_id = decode_cursor(cursor)
        query = query.where(tuple_(col(Redrive.created_at), col(Redrive.id)) < tuple_(cursor_at, cursor_id))
    async with engine.connect() as connection:
        rows = (await connection.execute(query, {"limit": limit + 1})).mappings().all()
    items = [RedriveProgress.model_validate(dict(row)) for row in rows[:limit]]
    more = len(rows) > limit
    return RedrivePage(items, encode_cursor(items[-1].created_at, items[-1].id) if more else None)
