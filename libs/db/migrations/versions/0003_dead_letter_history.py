"""Dead-letter capture history, retries and redrives.

- dead_letter_events: one row per dead letter received (unique dedupe key: a redelivered dead letter is
  recognised), linked to its entry; an entry retried from the DLQ that fails again gets a second event.
- dead_letter_retries: every republish of an entry, single or part of a redrive, and its outcome.
- redrives / redrive_items: a bulk retry's fixed selection, its rate and progress.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = [
    """CREATE TABLE IF NOT EXISTS dead_letter_events (
      id BIGSERIAL PRIMARY KEY,
      entry_id UUID NOT NULL REFERENCES dead_letter_queue(id) ON DELETE CASCADE,
      dedupe_key VARCHAR(64) NOT NULL UNIQUE,
      reason VARCHAR(32) NOT NULL,
      error_type VARCHAR(200),
      error_message TEXT,
      attempts INT,
      failed_at TIMESTAMPTZ NOT NULL,
      received_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
    )""",
    "CREATE INDEX IF NOT EXISTS idx_dlq_events_entry ON dead_letter_events(entry_id, id)",
    """CREATE TABLE IF NOT EXISTS redrives (
      id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
      requested_by VARCHAR(200) NOT NULL,
      selection JSONB NOT NULL,
      rate_per_second INT NOT NULL CHECK (rate_per_second > 0),
      status VARCHAR(16) NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'cancelled')),
      selected INT NOT NULL DEFAULT 0,
      sent INT NOT NULL DEFAULT 0,
      failed INT NOT NULL DEFAULT 0,
      skipped INT NOT NULL DEFAULT 0,
      created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
      finished_at TIMESTAMPTZ
    )""",
    """CREATE TABLE IF NOT EXISTS redrive_items (
      redrive_id UUID NOT NULL REFERENCES redrives(id) ON DELETE CASCADE,
      position INT NOT NULL,
      entry_id UUID NOT NULL REFERENCES dead_letter_queue(id) ON DELETE CASCADE,
      state VARCHAR(16) NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'failed', 'skipped')),
      PRIMARY KEY (redrive_id, position)
    )""",
    """CREATE TABLE IF NOT EXISTS dead_letter_retries (
      id BIGSERIAL PRIMARY KEY,
      entry_id UUID NOT NULL REFERENCES dead_letter_queue(id) ON DELETE CASCADE,
      redrive_id UUID REFERENCES redrives(id) ON DELETE SET NULL,
      requested_by VARCHAR(200) NOT NULL,
      requested_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
      outcome VARCHAR(16) NOT NULL DEFAULT 'sent'
        CHECK (outcome IN ('sent', 'publish_failed', 'succeeded', 'failed_again')),
      outcome_at TIMESTAMPTZ
    )""",
    "CREATE INDEX IF NOT EXISTS idx_dlq_retries_entry ON dead_letter_retries(entry_id, id)",
    "CREATE INDEX IF NOT EXISTS idx_dlq_list ON dead_letter_queue(created_at DESC, id DESC)",
    "ALTER TABLE dead_letter_queue ADD COLUMN IF NOT EXISTS message_type VARCHAR(100)",
    "ALTER TABLE dead_letter_queue ADD COLUMN IF NOT EXISTS content_type VARCHAR(100)",
    "CREATE INDEX IF NOT EXISTS idx_dlq_status_queue ON dead_letter_queue(status, queue_name)",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS dead_letter_retries, redrive_items, redrives, dead_letter_events CASCADE")
    op.execute("DROP INDEX IF EXISTS idx_dlq_list")
    op.execute("DROP INDEX IF EXISTS idx_dlq_status_queue")
    op.execute("ALTER TABLE dead_letter_queue DROP COLUMN IF EXISTS message_type")
    op.execute("ALTER TABLE dead_letter_queue DROP COLUMN IF EXISTS content_type")
