"""Leads remember when their lead.submitted was confirmed, so a repeated request republishes only if needed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE leads ADD COLUMN IF NOT EXISTS published_at TIMESTAMPTZ")
    op.execute("ALTER TABLE leads ADD COLUMN IF NOT EXISTS rejection_reason TEXT")
    op.execute("ALTER TABLE report_exports ADD COLUMN IF NOT EXISTS date_from DATE")
    op.execute("ALTER TABLE report_exports ADD COLUMN IF NOT EXISTS date_to DATE")


def downgrade() -> None:
    op.execute("ALTER TABLE leads DROP COLUMN IF EXISTS published_at")
    op.execute("ALTER TABLE leads DROP COLUMN IF EXISTS rejection_reason")
    op.execute("ALTER TABLE report_exports DROP COLUMN IF EXISTS date_from")
    op.execute("ALTER TABLE report_exports DROP COLUMN IF EXISTS date_to")
