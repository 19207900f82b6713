"""Dead-letter list at a million rows: an index for every filter in the list's keyset order, a time-window index,
trigram indexes for free text, and unresolved counts per failure group kept by triggers.

Written from libs/db/tables/dead_letters.py and reviewed. The trigram operator class comes from pg_trgm, a
trusted extension since PostgreSQL 13: the database's owner may create it. The counts table is filled and its
triggers created in one transaction (CREATE TRIGGER locks out writers until COMMIT, so no capture is missed or
counted twice); the indexes are then built CONCURRENTLY, outside it, so a large table keeps taking dead letters
meanwhile. The trigger function runs as its owner (SECURITY DEFINER): a service that writes dead_letter_queue
needs no grant on the counts, whichever it is (the scheduler's retention deletes entries too).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Each statement-level trigger sees the rows its statement changed (transition tables) and adds, per group, the
# unresolved entries it brought minus those it took away, groups in key order so that two writers lock them in
# the same order; a statement that changes no count locks nothing. (No CHECK >= 0: PostgreSQL checks an upsert's
# proposed row, a negative change, before it becomes an update.) A TRUNCATE of the entries empties the counts.
# A transition table exists only for the events that make it, and a trigger naming one fires for one event: one
# trigger per event, one branch per event (PL/pgSQL resolves a statement's tables when it first runs it).
COUNT_FUNCTION = """
CREATE FUNCTION dead_letter_groups_count() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM dead_letter_groups;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO dead_letter_groups AS g (queue_name, fingerprint, unresolved)
        SELECT queue_name, coalesce(fingerprint, ''), count(*) FILTER (WHERE status <> 'resolved')
        FROM added GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (queue_name, fingerprint) DO UPDATE SET unresolved = g.unresolved + excluded.unresolved
        WHERE excluded.unresolved <> 0;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO dead_letter_groups AS g (queue_name, fingerprint, unresolved)
        SELECT queue_name, fingerprint, sum(delta)
        FROM (SELECT queue_name, coalesce(fingerprint, '') AS fingerprint, 1 AS delta
              FROM added WHERE status <> 'resolved'
              UNION ALL
              SELECT queue_name, coalesce(fingerprint, ''), -1 FROM removed WHERE status <> 'resolved') AS changes
        GROUP BY 1, 2 HAVING sum(delta) <> 0 ORDER BY 1, 2
        ON CONFLICT (queue_name, fingerprint) DO UPDATE SET unresolved = g.unresolved + excluded.unresolved;
    ELSE
        UPDATE dead_letter_groups AS g SET unresolved = g.unresolved - gone.count
        FROM (SELECT queue_name, coalesce(fingerprint, '') AS fingerprint, count(*) AS count
              FROM removed WHERE status <> 'resolved' GROUP BY 1, 2 ORDER BY 1, 2) AS gone
        WHERE g.queue_name = gone.queue_name AND g.fingerprint = gone.fingerprint;
    END IF;
    RETURN NULL;
END
$$
"""
TRIGGERS = (
    "CREATE TRIGGER dead_letter_groups_on_insert AFTER INSERT ON dead_letter_queue"
    " REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION dead_letter_groups_count()",
    "CREATE TRIGGER dead_letter_groups_on_update AFTER UPDATE ON dead_letter_queue"
    " REFERENCING OLD TABLE AS removed NEW TABLE AS added"
    " FOR EACH STATEMENT EXECUTE FUNCTION dead_letter_groups_count()",
    "CREATE TRIGGER dead_letter_groups_on_delete AFTER DELETE ON dead_letter_queue"
    " REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION dead_letter_groups_count()",
    "CREATE TRIGGER dead_letter_groups_on_truncate AFTER TRUNCATE ON dead_letter_queue"
    " FOR EACH STATEMENT EXECUTE FUNCTION dead_letter_groups_count()",
)
BACKFILL = """
INSERT INTO dead_letter_groups (queue_name, fingerprint, unresolved)
SELECT queue_name, coalesce(fingerprint, ''), count(*) FILTER (WHERE status <> 'resolved')
FROM dead_letter_queue GROUP BY 1, 2
"""
UNRESOLVED = sa.text("status <> 'resolved'")
KEYSET = ("created_at DESC", "id DESC")
LIST_INDEXES = {
    f"idx_dlq_{name}_list": [column, *KEYSET]
    for name, column in (
        ("queue", "queue_name"),
        ("status", "status"),
        ("reason", "reason"),
        ("error_type", "error_type"),
        ("fingerprint", "fingerprint"),
        ("service", "service"),
    )
}
REPLACED = {
    "idx_dlq_fingerprint": ["fingerprint", "status"],
    "idx_dlq_status_queue": ["status", "queue_name"],
}


def _create(name: str, columns: list[str], **options: Any) -> None:
    op.create_index(
        name,
        "dead_letter_queue",
        [sa.text(column) for column in columns],
        unique=False,
        postgresql_concurrently=True,
        if_not_exists=True,
        **options,
    )


def _drop(name: str) -> None:
    op.drop_index(name, table_name="dead_letter_queue", postgresql_concurrently=True, if_exists=True)


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_table(
        "dead_letter_groups",
        sa.Column("queue_name", sa.String(length=100), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("unresolved", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("queue_name", "fingerprint", name="dead_letter_groups_pkey"),
    )
    op.execute(COUNT_FUNCTION)
    for trigger in TRIGGERS:
        op.execute(trigger)
    op.execute(BACKFILL)
    with op.get_context().autocommit_block():
        for name, columns in LIST_INDEXES.items():
            _create(name, columns)
        _create("idx_dlq_last_failed", ["last_failed_at DESC", "id DESC"])
        for name, expression, label in (
            ("idx_dlq_error_message_trgm", sa.column("error_message"), "error_message"),
            ("idx_dlq_payload_trgm", sa.cast(sa.column("payload"), sa.Text).label("payload_text"), "payload_text"),
        ):
            op.create_index(
                name,
                "dead_letter_queue",
                [expression],
                postgresql_using="gin",
                postgresql_ops={label: "gin_trgm_ops"},
                postgresql_concurrently=True,
                if_not_exists=True,
            )
        _create(
            "idx_dlq_group_latest",
            ["queue_name", "fingerprint", "last_failed_at DESC NULLS LAST"],
            postgresql_where=UNRESOLVED,
        )
        _create("idx_dlq_group_first", ["queue_name", "fingerprint", "first_failed_at"], postgresql_where=UNRESOLVED)
        for name in REPLACED:
            _drop(name)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, columns in REPLACED.items():
            _create(name, columns)
        for name in (*LIST_INDEXES, "idx_dlq_last_failed", "idx_dlq_error_message_trgm", "idx_dlq_payload_trgm",
                     "idx_dlq_group_latest", "idx_dlq_group_first"):  # fmt: skip
            _drop(name)
    for trigger in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER IF EXISTS dead_letter_groups_on_{trigger} ON dead_letter_queue")
    op.execute("DROP FUNCTION IF EXISTS dead_letter_groups_count()")
    op.drop_table("dead_letter_groups")
    # pg_trgm stays: other objects may have come to use it, and it costs nothing unused.
