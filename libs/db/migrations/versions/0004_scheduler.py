"""Scheduler state: job pause switches that survive restarts, run triggers, balance discrepancies.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = [
    """CREATE TABLE IF NOT EXISTS scheduled_jobs (
      job VARCHAR(100) PRIMARY KEY,
      paused BOOLEAN NOT NULL DEFAULT FALSE,
      changed_by VARCHAR(200),
      changed_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
    )""",
    "ALTER TABLE scheduled_job_runs DROP CONSTRAINT IF EXISTS scheduled_job_runs_status_check",
    "ALTER TABLE scheduled_job_runs ADD CONSTRAINT scheduled_job_runs_status_check "
    "CHECK (status IN ('queued', 'running', 'succeeded', 'failed'))",
    "ALTER TABLE scheduled_job_runs ALTER COLUMN status SET DEFAULT 'queued'",
    "ALTER TABLE scheduled_job_runs ADD COLUMN IF NOT EXISTS trigger VARCHAR(16) NOT NULL DEFAULT 'schedule'",
    "ALTER TABLE scheduled_job_runs ADD COLUMN IF NOT EXISTS coalesced_slots INT NOT NULL DEFAULT 0",
    "ALTER TABLE scheduled_job_runs ADD COLUMN IF NOT EXISTS attempts INT NOT NULL DEFAULT 0",
    "ALTER TABLE scheduled_job_runs ADD COLUMN IF NOT EXISTS requested_by VARCHAR(200)",
    "ALTER TABLE scheduled_job_runs ALTER COLUMN started_at DROP NOT NULL",
    "ALTER TABLE scheduled_job_runs ALTER COLUMN started_at DROP DEFAULT",
    "CREATE INDEX IF NOT EXISTS idx_job_runs_job ON scheduled_job_runs(job, slot DESC)",
    """CREATE TABLE IF NOT EXISTS balance_discrepancies (
      id BIGSERIAL PRIMARY KEY,
      run_id UUID NOT NULL REFERENCES scheduled_job_runs(id) ON DELETE CASCADE,
      provider_id UUID NOT NULL REFERENCES providers(id),
      expected_cents BIGINT NOT NULL,
      actual_cents BIGINT NOT NULL,
      found_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
    )""",
    "CREATE INDEX IF NOT EXISTS idx_discrepancies_run ON balance_discrepancies(run_id)",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS balance_discrepancies, scheduled_jobs CASCADE")
    for column in ("trigger", "coalesced_slots", "attempts", "requested_by"):
        op.execute(f"ALTER TABLE scheduled_job_runs DROP COLUMN IF EXISTS {column}")
