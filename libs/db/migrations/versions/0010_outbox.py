"""outbox: events committed with the rows they announce, for the ingest-gateway's relay to publish.

Written from libs/db/tables/outbox.py and checked with `alembic check` (the drift test). Leads stored before the
outbox whose lead.submitted was never confirmed (`published_at` NULL, still `submitted`) get theirs staged here,
so no lead of the old code path stays stranded.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("message_type", sa.String(length=100), nullable=False),
        sa.Column("correlation_id", sa.String(length=200), nullable=False),
        sa.Column("traceparent", sa.String(length=55), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="outbox_pkey"),
    )
    op.create_index("idx_outbox_due", "outbox", ["available_at", "id"], unique=False)
    # The LeadSubmitted contract's JSON, as the gateway wrote it (libs/contracts: lead_id, external_id, category,
    # zip); message and correlation ids as submissions.py gives them.
    op.execute(
        """
        INSERT INTO outbox (message_id, message_type, correlation_id, body)
        SELECT 'lead.submitted:' || id, 'lead.submitted', 'lead.submitted:' || id,
               convert_to(jsonb_build_object('lead_id', id, 'external_id', external_id, 'category', category,
                                             'zip', zip)::text, 'UTF8')
        FROM leads WHERE published_at IS NULL AND status = 'submitted'
        """
    )


def downgrade() -> None:
    op.drop_index("idx_outbox_due", table_name="outbox")
    op.drop_table("outbox")
