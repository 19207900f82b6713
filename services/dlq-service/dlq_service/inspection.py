"""One entry as the console shows it: masked like the list until the admin reveals it, every look audited as
`dlq.entry_viewed` with the reveal flag, with the edits made to its body."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime

import orjson
from sqlalchemy import BindParameter, bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel, col

from dlq_service.dead_letters import mask, mask_text
from dlq_service.queries import (
    DeadLetterDetail,
    DeadLetterRecord,
    EntryNotFound,
    FailureRecord,
    RetryRecord,
    selected,
)
from libs import audit
from libs.db.tables import DeadLetter, DeadLetterEdit, DeadLetterEvent, DeadLetterRetry
from libs.logging.pii import mask_pii


class EditRecord(SQLModel):
    id: int
    edited_by: str
    edited_at: datetime
    diff: str


class Inspection(SQLModel):
    entry: DeadLetterDetail
    revealed: bool
    body_text: str
    """The body as text (JSON pretty-printed when it is JSON): what the editor starts from; masked unless revealed."""
    edits: list[EditRecord]


_THIS_ENTRY: BindParameter[uuid.UUID] = bindparam("entry_id")
_RECORD = select(*selected(DeadLetter, DeadLetterRecord, queue=DeadLetter.queue_name), col(DeadLetter.raw_body)).where(
    col(DeadLetter.id) == _THIS_ENTRY
)
_FAILURES = (
    select(*selected(DeadLetterEvent, FailureRecord))
    .where(col(DeadLetterEvent.entry_id) == _THIS_ENTRY)
    .order_by(col(DeadLetterEvent.id))
)
_RETRIES = (
    select(*selected(DeadLetterRetry, RetryRecord))
    .where(col(DeadLetterRetry.entry_id) == _THIS_ENTRY)
    .order_by(col(DeadLetterRetry.id))
)
_EDITS = (
    select(*selected(DeadLetterEdit, EditRecord))
    .where(col(DeadLetterEdit.entry_id) == _THIS_ENTRY)
    .order_by(col(DeadLetterEdit.id))
)


def body_text(raw_body: bytes) -> str:
    """JSON pretty-printed with its keys in their order, anything else as text (invalid UTF-8 replaced)."""
    try:
        return orjson.dumps(orjson.loads(raw_body), option=orjson.OPT_INDENT_2).decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError, ValueError, TypeError):
        return raw_body.decode("utf-8", "replace")


def masked(entry: DeadLetterDetail, text: str) -> tuple[DeadLetterDetail, str]:
    """Contact details hidden wherever they may be: payload, headers, error, stack, failure history; the raw
    body is not shown at all."""
    hidden = entry.model_copy(
        update={
            "payload": mask(entry.payload),
            "headers": mask(entry.headers),
            "error_message": mask_pii(entry.error_message) if entry.error_message else None,
            "stack_trace": mask_pii(entry.stack_trace) if entry.stack_trace else None,
            "raw_body_base64": "",
            "failures": [
                failure.model_copy(update={"error_message": mask_pii(failure.error_message or "") or None})
                for failure in entry.failures
            ],
        }
    )
    return hidden, masked_text(text)


def masked_text(text: str) -> str:
    """A body or a diff of one with contact details hidden: by key when it is JSON, by shape and key otherwise."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return mask_text(text)
    return orjson.dumps(mask(value), option=orjson.OPT_INDENT_2).decode()


async def inspect(engine: AsyncEngine, entry_id: uuid.UUID, actor: str, *, reveal: bool) -> Inspection:
    """Raises EntryNotFound. The look is audited in the same transaction, with whether it was revealed."""
    params = {"entry_id": entry_id}
    async with engine.begin() as connection:
        row = (await connection.execute(_RECORD, params)).mappings().first()
        if row is None:
            raise EntryNotFound(f"dead letter {entry_id} not found")
        raw_body = bytes(row["raw_body"])
        entry = DeadLetterDetail.model_validate(
            {**row, "raw_body_base64": base64.b64encode(raw_body).decode(),
             "failures": (await connection.execute(_FAILURES, params)).mappings().all(),
             "retries": (await connection.execute(_RETRIES, params)).mappings().all()}
        )  # fmt: skip
        edits = [EditRecord.model_validate(edit) for edit in (await connection.execute(_EDITS, params)).mappings()]
        await audit.record(
            connection, actor=actor, action="dlq.entry_viewed", entity_type="dead_letter", entity_id=str(entry_id),
            metadata={"reveal": reveal, "via": "console"},
        )  # fmt: skip
    text = body_text(raw_body)
    if not reveal:
        entry, text = masked(entry, text)
        edits = [edit.model_copy(update={"diff": mask_text(edit.diff)}) for edit in edits]
    return Inspection(entry=entry, revealed=reveal, body_text=text, edits=edits)
