"""Dead-letter free text as words: a stored tsvector of the error message's and the payload's values, GIN-indexed.

Written from libs/db/tables/dead_letters.py (`search_words`, `search_document`) and checked with the drift test.
Adding a stored generated column rewrites the table (and rebuilds its indexes) under an exclusive lock: capture
waits (letters stay in the `dlq` queue, unacked) and the admin reads wait until it commits; the whole upgrade
took about 8 minutes for a million entries on a loaded 2-core machine (docs/BENCHMARKS.md). The column is stored
rather than the expression only indexed: a page of a common word is read newest first from the list's index,
testing each entry's words on the way, and computing them per entry costs about 80 times more than reading them.
The index is then built CONCURRENTLY, and the table analysed so that the planner knows each word's frequency.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

DOCUMENT = (
    "to_tsvector('simple'::regconfig, coalesce(error_message, ''::text))"
    " || jsonb_to_tsvector('simple'::regconfig, coalesce(payload, '{}'::jsonb), '[\"string\", \"numeric\"]'::jsonb)"
)


def upgrade() -> None:
    op.add_column(
        "dead_letter_queue",
        sa.Column("search_words", postgresql.TSVECTOR(), sa.Computed(DOCUMENT, persisted=True), nullable=True),
    )
    with op.get_context().autocommit_block():
        op.create_index(
            "idx_dlq_search",
            "dead_letter_queue",
            ["search_words"],
            postgresql_using="gin",
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.execute("ANALYZE dead_letter_queue")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("idx_dlq_search", table_name="dead_letter_queue", postgresql_concurrently=True, if_exists=True)
    op.drop_column("dead_letter_queue", "search_words")
