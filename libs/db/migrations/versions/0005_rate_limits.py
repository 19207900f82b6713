"""Rate-limit hits shared by every replica: a login limit that N gateways count together, not N times over.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = [
    # `bucket` is a digest of the limiter's scope and key: no e-mail address or client address is stored.
    """CREATE TABLE IF NOT EXISTS rate_limit_hits (
      id BIGSERIAL PRIMARY KEY,
      bucket CHAR(64) NOT NULL,
      hit_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
      expires_at TIMESTAMPTZ NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS idx_rate_limit_hits_bucket ON rate_limit_hits(bucket, hit_at)",
    "CREATE INDEX IF NOT EXISTS idx_rate_limit_hits_expiry ON rate_limit_hits(expires_at)",
]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS rate_limit_hits")
