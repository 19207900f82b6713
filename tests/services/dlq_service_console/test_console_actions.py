"""What the console's own domain functions do on the real database and broker: edit and retry keeps both bodies
with their diff, a look at an entry is audited with its reveal flag, a note and a group are resolved through the
API's own resolve."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from pydantic import SecretStr
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import col

from dlq_service import edits, group_resolutions, inspection
from dlq_service.edits import InvalidEdit
from dlq_service.retries import EntryNotRetryable
from dlq_service.signing import RetrySigner
from ingest_gateway.accounts import create_user
from libs.auth import TotpSecrets
from libs.db.tables import AuditEntry, DeadLetter, DeadLetterEdit, DeadLetterStatus
from libs.messaging.publisher import Publisher
from tests.browser.conftest import dead_letter_row
from tests.conftest import TEST_TOTP_ENCRYPTION_KEY
from tests.services.conftest import publisher_for

SIGNER = RetrySigner(SecretStr("a-retry-signing-key-only-these-tests-use-0123"))
INVALID = {"template": "new_lead", "to": "ann-at-example.com", "params": {}}


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def actor(engine: AsyncEngine) -> str:
    """An admin's id: resolving names a user."""
    user_id, _ = await create_user(engine, f"admin-{uuid.uuid4().hex[:8]}@example.com", "admin", "pw", None, True,
                                   totp=TotpSecrets.from_keys(TEST_TOTP_ENCRYPTION_KEY))  # fmt: skip
    return str(user_id)


@pytest.fixture(scope="module")
async def publisher(rabbitmq_url: str) -> AsyncIterator[Publisher]:
    publisher, broker = await publisher_for(rabbitmq_url)
    yield publisher
    await broker.stop()


async def entry(engine: AsyncEngine, **overrides: Any) -> uuid.UUID:
    row = dead_letter_row(**overrides)
    async with engine.begin() as connection:
        await connection.execute(insert(DeadLetter), [row])
    entry_id: uuid.UUID = row["id"]
    return entry_id


async def stored(engine: AsyncEngine, entry_id: uuid.UUID) -> Any:
    async with engine.connect() as connection:
        return (
            await connection.execute(
                select(col(DeadLetter.raw_body), col(DeadLetter.payload), col(DeadLetter.status)).where(
                    col(DeadLetter.id) == entry_id
                )
            )
        ).one()


async def audited(engine: AsyncEngine, entry_id: uuid.UUID, action: str) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        return list(
            (
                await connection.scalars(
                    select(col(AuditEntry.details)).where(
                        col(AuditEntry.entity_id) == str(entry_id), col(AuditEntry.action) == action
                    )
                )
            ).all()
        )


async def test_an_edit_and_retry_keeps_both_bodies_with_their_diff_and_sends_the_edited_one(
    engine: AsyncEngine, actor: str, publisher: Publisher
) -> None:
    original = orjson.dumps(INVALID)
    entry_id = await entry(engine, payload=INVALID, raw_body=original)
    fixed = orjson.dumps(INVALID | {"to": "ann@example.com"}).decode()
    await edits.edit_and_retry(engine, publisher, SIGNER, entry_id, fixed, actor)
    now = await stored(engine, entry_id)
    assert (bytes(now.raw_body), now.payload["to"], now.status) == (fixed.encode(), "ann@example.com",
                                                                   DeadLetterStatus.retrying)  # fmt: skip
    async with engine.connect() as connection:
        [edit] = (
            await connection.execute(select(DeadLetterEdit).where(col(DeadLetterEdit.entry_id) == entry_id))
        ).all()
    assert (bytes(edit.original_body), bytes(edit.edited_body), edit.edited_by) == (original, fixed.encode(), actor)
    assert '-  "to": "ann-at-example.com"' in edit.diff
    [details] = await audited(engine, entry_id, "dlq.entry_edited_and_retried")
    assert details["diff"] == edit.diff


async def test_an_edit_refused_by_the_contract_changes_nothing(
    engine: AsyncEngine, actor: str, publisher: Publisher
) -> None:
    entry_id = await entry(engine, payload=INVALID, raw_body=orjson.dumps(INVALID))
    with pytest.raises(InvalidEdit) as refused:
        await edits.edit_and_retry(engine, publisher, SIGNER, entry_id, orjson.dumps(INVALID).decode(), actor)
    assert [error.field for error in refused.value.errors] == ["to"]
    now = await stored(engine, entry_id)
    assert (bytes(now.raw_body), now.status) == (orjson.dumps(INVALID), DeadLetterStatus.failed)
    assert await audited(engine, entry_id, "dlq.entry_edited_and_retried") == []


async def test_an_entry_being_retried_takes_no_edit(engine: AsyncEngine, actor: str, publisher: Publisher) -> None:
    entry_id = await entry(engine, status=DeadLetterStatus.retrying)
    with pytest.raises(EntryNotRetryable):
        await edits.edit_and_retry(engine, publisher, SIGNER, entry_id, '{"template": "new_lead"}', actor)


async def test_a_look_is_audited_with_its_reveal_flag_and_masked_unless_revealed(
    engine: AsyncEngine, actor: str
) -> None:
    entry_id = await entry(engine, payload={"template": "new_lead", "to": "ann@example.com", "params": {}},
                           raw_body=b'{"template": "new_lead", "to": "ann@example.com", "params": {}}',
                           error_message="550 <ann@example.com>: mailbox unavailable")  # fmt: skip
    masked = await inspection.inspect(engine, entry_id, actor, reveal=False)
    revealed = await inspection.inspect(engine, entry_id, actor, reveal=True)
    assert "ann@example.com" not in masked.body_text + (masked.entry.error_message or "") + str(masked.entry.payload)
    assert masked.entry.raw_body_base64 == ""
    assert "ann@example.com" in revealed.body_text
    assert "ann@example.com" in (revealed.entry.error_message or "")
    flags = [details["reveal"] for details in await audited(engine, entry_id, "dlq.entry_viewed")]
    assert sorted(flags) == [False, True]


async def test_a_note_given_when_resolving_is_kept_in_the_audit_trail(engine: AsyncEngine, actor: str) -> None:
    entry_id = await entry(engine)
    await group_resolutions.resolve_entry(engine, entry_id, actor, "  fixed the template \x00 by hand ")
    assert (await stored(engine, entry_id)).status == DeadLetterStatus.resolved
    assert await audited(engine, entry_id, "dlq.entry_noted") == [{"note": "fixed the template  by hand"}]
    assert len(await audited(engine, entry_id, "dlq.entry_resolved")) == 1


async def test_resolving_a_group_resolves_its_unresolved_entries_and_nothing_else(
    engine: AsyncEngine, actor: str
) -> None:
    fingerprint = f"fp-{uuid.uuid4().hex[:12]}"
    members = [await entry(engine, fingerprint=fingerprint) for _ in range(3)]
    retrying = await entry(engine, fingerprint=fingerprint, status=DeadLetterStatus.retrying)
    other_queue = await entry(engine, fingerprint=fingerprint, queue_name="distribution")
    resolved = await group_resolutions.resolve_group(engine, "email", fingerprint, actor, "known outage")
    assert resolved == 4
    for entry_id in [*members, retrying]:
        assert (await stored(engine, entry_id)).status == DeadLetterStatus.resolved
    assert (await stored(engine, other_queue)).status == DeadLetterStatus.failed
