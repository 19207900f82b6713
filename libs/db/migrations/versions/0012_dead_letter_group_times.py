"""Failure groups keep their times and latest error beside their count: the groups read is one scan of the groups.

Written from libs/db/tables/dead_letters.py (`DeadLetterGroupCount`) and checked with the drift test. The groups
read probed two indexes per group for its first and last failure and its latest error (246 groups: 7 ms of
PostgreSQL per read); the triggers that keep each group's count now also refresh those of the groups a statement
touched, with the same two probes, once per statement and group (a capture batch of one group: two probes).

The refresh locks the touched groups' rows in key order first, then reads the entries in a statement of its own:
under READ COMMITTED that statement's snapshot is taken after every writer that held one of those rows before it
committed, so what it reads includes their entries whatever the order in which the writers ran. (An UPDATE that
waited for a row lock would keep the snapshot it started with for the entries it reads.)

The columns are added, the functions replaced and the groups backfilled in one transaction holding dead_letter_queue
in SHARE mode (writers wait, reads go on): no write lands between the backfill and the new trigger function. The
groups table is small (one row per queue and fingerprint); at 1,095,070 entries and 246 groups the upgrade took
well under a second.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

REFRESH_FUNCTION = """
CREATE FUNCTION dead_letter_groups_refresh(queues text[], fingerprints text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM 1 FROM dead_letter_groups AS g
    JOIN unnest(queues, fingerprints) AS touched (queue_name, fingerprint)
        ON g.queue_name = touched.queue_name AND g.fingerprint = touched.fingerprint
    ORDER BY g.queue_name, g.fingerprint
    FOR UPDATE OF g;
    UPDATE dead_letter_groups AS g
    SET first_seen = (
            SELECT min(e.first_failed_at) FROM dead_letter_queue AS e
            WHERE e.queue_name = g.queue_name AND e.fingerprint = nullif(g.fingerprint, '')
              AND e.status <> 'resolved'),
        (last_seen, error_type, sample_error) = (
            SELECT e.last_failed_at, e.error_type, e.error_message FROM dead_letter_queue AS e
            WHERE e.queue_name = g.queue_name AND e.fingerprint = nullif(g.fingerprint, '')
              AND e.status <> 'resolved'
            ORDER BY e.last_failed_at DESC NULLS LAST LIMIT 1)
    FROM unnest(queues, fingerprints) AS touched (queue_name, fingerprint)
    WHERE g.queue_name = touched.queue_name AND g.fingerprint = touched.fingerprint;
END
$$
"""
# 0009's function, each branch followed by the refresh of the groups whose unresolved entries it changed.
COUNT_FUNCTION = """
CREATE OR REPLACE FUNCTION dead_letter_groups_count() RETURNS trigger
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
        PERFORM dead_letter_groups_refresh(array_agg(queue_name), array_agg(fingerprint))
        FROM (SELECT DISTINCT queue_name, coalesce(fingerprint, '') AS fingerprint
              FROM added WHERE status <> 'resolved') AS touched;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO dead_letter_groups AS g (queue_name, fingerprint, unresolved)
        SELECT queue_name, fingerprint, sum(delta)
        FROM (SELECT queue_name, coalesce(fingerprint, '') AS fingerprint, 1 AS delta
              FROM added WHERE status <> 'resolved'
              UNION ALL
              SELECT queue_name, coalesce(fingerprint, ''), -1 FROM removed WHERE status <> 'resolved') AS changes
        GROUP BY 1, 2 HAVING sum(delta) <> 0 ORDER BY 1, 2
        ON CONFLICT (queue_name, fingerprint) DO UPDATE SET unresolved = g.unresolved + excluded.unresolved;
        PERFORM dead_letter_groups_refresh(array_agg(queue_name), array_agg(fingerprint))
        FROM (SELECT queue_name, coalesce(fingerprint, '') AS fingerprint FROM added WHERE status <> 'resolved'
              UNION
              SELECT queue_name, coalesce(fingerprint, '') FROM removed WHERE status <> 'resolved') AS touched;
    ELSE
        UPDATE dead_letter_groups AS g SET unresolved = g.unresolved - gone.count
        FROM (SELECT queue_name, coalesce(fingerprint, '') AS fingerprint, count(*) AS count
              FROM removed WHERE status <> 'resolved' GROUP BY 1, 2 ORDER BY 1, 2) AS gone
        WHERE g.queue_name = gone.queue_name AND g.fingerprint = gone.fingerprint;
        PERFORM dead_letter_groups_refresh(array_agg(queue_name), array_agg(fingerprint))
        FROM (SELECT DISTINCT queue_name, coalesce(fingerprint, '') AS fingerprint
              FROM removed WHERE status <> 'resolved') AS touched;
    END IF;
    RETURN NULL;
END
$$
"""
BACKFILL = "SELECT dead_letter_groups_refresh(array_agg(queue_name), array_agg(fingerprint)) FROM dead_letter_groups"
PREVIOUS_COUNT_FUNCTION = """
CREATE OR REPLACE FUNCTION dead_letter_groups_count() RETURNS trigger
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


def upgrade() -> None:
    op.execute("LOCK TABLE dead_letter_queue IN SHARE MODE")
    op.add_column("dead_letter_groups", sa.Column("first_seen", sa.DateTime(timezone=True), nullable=True))
    op.add_column("dead_letter_groups", sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True))
    op.add_column("dead_letter_groups", sa.Column("error_type", sa.String(length=200), nullable=True))
    op.add_column("dead_letter_groups", sa.Column("sample_error", sa.Text(), nullable=True))
    op.execute(REFRESH_FUNCTION)
    op.execute(COUNT_FUNCTION)
    op.execute(BACKFILL)


def downgrade() -> None:
    op.execute("LOCK TABLE dead_letter_queue IN SHARE MODE")
    op.execute(PREVIOUS_COUNT_FUNCTION)
    op.execute("DROP FUNCTION IF EXISTS dead_letter_groups_refresh(text[], text[])")
    for name in ("sample_error", "error_type", "last_seen", "first_seen"):
        op.drop_column("dead_letter_groups", name)
