"""The dead-letter list as the console filters it: the API's filters plus the failing service, and the bulk
retry a filtered list asks for."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service.queries import Filters, selected_ids
from dlq_service.retries import BulkRetry, FilterBody
from libs.db.tables import DeadLetter

MAX_SELECTED_BY_ID = 10_000
"""What a redrive by ids may hold (the API's bound); a filter the API cannot express selects by ids."""


@dataclasses.dataclass(frozen=True)
class ListFilters(Filters):
    EQUAL: ClassVar[Mapping[str, Any]] = {**Filters.EQUAL, "service": DeadLetter.service}

    service: str | None = None


async def bulk_retry(
    engine: AsyncEngine, filters: ListFilters, *, dry_run: bool, rate_per_second: int | None
) -> BulkRetry:
    """The failed entries the list shows, as the API's bulk retry selects them: by filter (kept with the redrive as
    asked), or, when the list is filtered by service, by the ids that filter matches now."""
    if filters.service is None:
        selection = FilterBody(
            queue=filters.queue, reason=filters.reason, error_type=filters.error_type,
            fingerprint=filters.fingerprint, failed_from=filters.failed_from, failed_to=filters.failed_to,
            q=filters.text,
        )  # fmt: skip
        return BulkRetry(filter=selection, dry_run=dry_run, rate_per_second=rate_per_second)
    async with engine.connect() as connection:
        ids = await selected_ids(connection, filters, MAX_SELECTED_BY_ID)
    return BulkRetry(ids=ids, dry_run=dry_run, rate_per_second=rate_per_second)
