"""Edit and retry: a dead letter's body corrected by an admin, checked against the message contract of its type
(the model its consumer decodes with), kept beside the body it replaces with a diff, then retried the one way
every retry goes (`retries.retry_entry`)."""

from __future__ import annotations

import difflib
import uuid
from dataclasses import dataclass

import orjson
from pydantic import ValidationError
from sqlalchemy import Text, bindparam, cast, delete, insert, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from dlq_service import retries
from dlq_service.dead_letters import decode_payload
from dlq_service.queries import EntryNotFound, EntryState
from dlq_service.retries import EntryNotRetryable
from dlq_service.signing import RetrySigner
from libs import audit
from libs.contracts import ALL_MESSAGES, Message
from libs.db.tables import DeadLetter, DeadLetterEdit, DeadLetterStatus
from libs.messaging.publisher import Publisher, PublishFailed

CONTRACTS: dict[str, type[Message]] = {message.message_type: message for message in ALL_MESSAGES}
MAX_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class FieldError:
    field: str
    """Dotted path into the body (`contact.email`), or `body` for the body as a whole."""
    message: str


class InvalidEdit(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{error.field}: {error.message}" for error in errors))
        self.errors = errors


def contract_errors(message_type: str | None, body: str) -> list[FieldError]:
    """What the consumer of this type would refuse in `body`; nothing when it would accept it."""
    contract = CONTRACTS.get(message_type or "")
    if contract is None:
        return [FieldError("body", f"no message contract for type {message_type!r}: it cannot be checked")]
    if len(body.encode()) > MAX_BODY_BYTES:
        return [FieldError("body", f"longer than {MAX_BODY_BYTES} bytes")]
    try:
        contract.model_validate_json(body)
    except ValidationError as error:
        return [
            FieldError(".".join(str(part) for part in problem["loc"]) or "body", problem["msg"])
            for problem in error.errors(include_url=False)
        ]
    except RecursionError:
        return [FieldError("body", "nested too deeply")]
    return []


def body_diff(original: bytes, edited: bytes) -> str:
    """A unified diff of the two bodies, line by line as JSON pretty-prints them (as text otherwise)."""
    return "".join(
        difflib.unified_diff(_lines(original), _lines(edited), fromfile="original", tofile="edited", lineterm="\n", n=2)
    )


def _lines(body: bytes) -> list[str]:
    try:
        text = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError, RecursionError):
        text = body.decode("utf-8", "replace")
    return [line + "\n" for line in text.splitlines()]


# JSON as text, cast by PostgreSQL: what capture stores, so the payload searched and shown is the body sent.
_PAYLOAD = cast(bindparam("payload", type_=Text), JSONB)
_FAILED_ENTRY = select(col(DeadLetter.raw_body), col(DeadLetter.message_type), col(DeadLetter.status)).where(
    col(DeadLetter.id) == bindparam("entry_id")
)
# Only a failed entry takes a new body: one being retried or resolved keeps what it was sent with.
_REPLACE_BODY = (
    update(DeadLetter)
    .where(col(DeadLetter.id) == bindparam("entry_id"), col(DeadLetter.status) == DeadLetterStatus.failed)
    .values(raw_body=bindparam("body"), payload=_PAYLOAD)
    .returning(col(DeadLetter.id))
)
_ADD_EDIT = insert(DeadLetterEdit).returning(col(DeadLetterEdit.id))
_DROP_EDIT = delete(DeadLetterEdit).where(col(DeadLetterEdit.id) == bindparam("edit_id"))
_RESTORE_BODY = (
    update(DeadLetter)
    .where(
        col(DeadLetter.id) == bindparam("entry_id"),
        col(DeadLetter.status) == DeadLetterStatus.failed,
        col(DeadLetter.raw_body) == bindparam("edited"),
    )
    .values(raw_body=bindparam("body"), payload=_PAYLOAD)
)


def _payload(body: bytes) -> str | None:
    decoded = decode_payload(body)
    return None if decoded is None else orjson.dumps(decoded).decode()


async def edit_and_retry(
    engine: AsyncEngine, publisher: Publisher, signer: RetrySigner, entry_id: uuid.UUID, body: str, actor: str
) -> EntryState:
    """Raises EntryNotFound, EntryNotRetryable (not failed), InvalidEdit (with every field error) or PublishFailed
    (the entry keeps its former body). Audited as dlq.entry_edited_and_retried with the diff."""
    edited = body.encode()
    async with engine.connect() as connection:
        entry = (await connection.execute(_FAILED_ENTRY, {"entry_id": entry_id})).first()
    if entry is None:
        raise EntryNotFound(f"dead letter {entry_id} not found")
    if entry.status != DeadLetterStatus.failed:
        raise EntryNotRetryable(f"entry is {entry.status}")
    errors = contract_errors(entry.message_type, body)
    if errors:
        raise InvalidEdit(errors)
    original = bytes(entry.raw_body)
    diff = body_diff(original, edited)
    async with engine.begin() as connection:
        if await connection.scalar(_REPLACE_BODY, {"entry_id": entry_id, "body": edited, "payload": _payload(edited)}):
            edit_id = await connection.scalar(
                _ADD_EDIT,
                {"entry_id": entry_id, "edited_by": actor, "original_body": original, "edited_body": edited,
                 "diff": diff},
            )  # fmt: skip
        else:
            raise EntryNotRetryable("entry is no longer failed")
    try:
        state = await retries.retry_entry(engine, publisher, signer, entry_id, actor)
    except (PublishFailed, EntryNotRetryable, EntryNotFound):
        # Not sent: the entry goes back to the body it failed with, and the edit is forgotten.
        async with engine.begin() as connection:
            await connection.execute(
                _RESTORE_BODY,
                {"entry_id": entry_id, "edited": edited, "body": original, "payload": _payload(original)},
            )
            await connection.execute(_DROP_EDIT, {"edit_id": edit_id})
        raise
    async with engine.begin() as connection:
        await audit.record(
            connection, actor=actor, action="dlq.entry_edited_and_retried", entity_type="dead_letter",
            entity_id=str(entry_id), metadata={"edit_id": edit_id, "diff": diff},
        )  # fmt: skip
    return state
