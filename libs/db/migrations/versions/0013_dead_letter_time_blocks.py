"""Dead letters' arrival times by block (BRIN): a search for several words reads a window's blocks, not its entries.

Written from libs/db/tables/dead_letters.py (`idx_dlq_created_brin`) and checked with the drift test. Entries are
appended as they arrive, so each run of 16 blocks holds a narrow stretch of `created_at`; the index keeps each run's
earliest and latest time (568 kB for 1.3 million entries). A search for several words ANDs the words' posting
lists with the blocks of its time window (dlq_service/queries.py, WORD_WINDOWS). Through the list's btree, a window
read every entry it held: after a burst of 300,000 failures in the last hour, none with the words, a first page of
two words took 40-45 ms of PostgreSQL, and 16 ms with this index. Built CONCURRENTLY, so capture goes on meanwhile
(1.1 s for 1.3 million entries here).

Without `autosummarize`: at capture's rate it asks for a summary of about 80 new ranges a second, more than
autovacuum's queue of work items holds between two of its rounds, and PostgreSQL logs every request it drops
(3,141 lines while about 380,000 letters were captured). The ranges filled since the last VACUUM (which autovacuum
runs after enough inserts) are read as a whole: their entries having the words are fetched and tested for the
window's times, which after a burst without the words is nothing (a page of two words: 45-49 ms with those ranges
summarized or not).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "idx_dlq_created_brin",
            "dead_letter_queue",
            ["created_at"],
            postgresql_using="brin",
            postgresql_with={"pages_per_range": 16},
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "idx_dlq_created_brin", table_name="dead_letter_queue", postgresql_concurrently=True, if_exists=True
        )
