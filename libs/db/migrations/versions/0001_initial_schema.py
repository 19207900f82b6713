"""Initial schema: the dead-letter store and the lead-distribution domain tables.

Money is integer cents (bigint) everywhere; raw message bodies are bytea because jsonb and text
reject NUL characters and invalid UTF-8, and a dead letter must never be lost for that.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE IF NOT EXISTS users (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  email VARCHAR(320) NOT NULL UNIQUE,
  role VARCHAR(16) NOT NULL CHECK (role IN ('admin', 'provider')),
  password_hash TEXT NOT NULL,
  totp_secret TEXT,
  totp_last_used_step BIGINT,
  provider_id UUID,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS lead_sources (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  name VARCHAR(200) NOT NULL,
  api_key_hash TEXT NOT NULL UNIQUE,
  trusted BOOLEAN NOT NULL DEFAULT FALSE,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS providers (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  name VARCHAR(200) NOT NULL,
  email VARCHAR(320) NOT NULL,
  balance_cents BIGINT NOT NULL DEFAULT 0 CHECK (balance_cents >= 0),
  low_balance_threshold_cents BIGINT NOT NULL DEFAULT 0 CHECK (low_balance_threshold_cents >= 0),
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

DO $$ BEGIN
  ALTER TABLE users ADD CONSTRAINT users_provider_fk FOREIGN KEY (provider_id) REFERENCES providers(id);
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;

CREATE TABLE IF NOT EXISTS subscriptions (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  provider_id UUID NOT NULL REFERENCES providers(id),
  category VARCHAR(100) NOT NULL,
  zip_codes TEXT[] NOT NULL DEFAULT '{}',
  zip_prefix VARCHAR(10),
  price_cents BIGINT NOT NULL CHECK (price_cents > 0),
  daily_cap INT CHECK (daily_cap IS NULL OR daily_cap > 0),
  status VARCHAR(16) NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'cancelled')),
  paused_reason VARCHAR(64),
  paused_until TIMESTAMPTZ,
  last_assigned_at TIMESTAMPTZ,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_subscriptions_match ON subscriptions(category, status);

CREATE TABLE IF NOT EXISTS leads (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  source_id UUID NOT NULL REFERENCES lead_sources(id),
  external_id VARCHAR(200) NOT NULL,
  idempotency_key VARCHAR(200),
  category VARCHAR(100) NOT NULL,
  zip VARCHAR(10) NOT NULL,
  contact JSONB NOT NULL,
  status VARCHAR(16) NOT NULL DEFAULT 'submitted'
    CHECK (status IN ('submitted', 'approved', 'rejected', 'distributed', 'unassigned')),
  decided_by UUID REFERENCES users(id),
  decided_at TIMESTAMPTZ,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  UNIQUE (source_id, external_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_leads_idempotency
  ON leads(source_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS assignments (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  lead_id UUID NOT NULL REFERENCES leads(id),
  provider_id UUID NOT NULL REFERENCES providers(id),
  subscription_id UUID NOT NULL REFERENCES subscriptions(id),
  price_cents BIGINT NOT NULL CHECK (price_cents > 0),
  status VARCHAR(16) NOT NULL DEFAULT 'delivered' CHECK (status IN ('delivered', 'refunded')),
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  UNIQUE (lead_id, provider_id)
);
CREATE INDEX IF NOT EXISTS idx_assignments_inbox ON assignments(provider_id, created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS bad_lead_reports (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  assignment_id UUID NOT NULL UNIQUE REFERENCES assignments(id),
  provider_id UUID NOT NULL REFERENCES providers(id),
  reason TEXT NOT NULL,
  status VARCHAR(16) NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
  decided_by UUID REFERENCES users(id),
  decided_at TIMESTAMPTZ,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS refunds (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  bad_lead_report_id UUID NOT NULL UNIQUE REFERENCES bad_lead_reports(id),
  assignment_id UUID NOT NULL UNIQUE REFERENCES assignments(id),
  provider_id UUID NOT NULL REFERENCES providers(id),
  amount_cents BIGINT NOT NULL CHECK (amount_cents > 0),
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS ledger_entries (
  id BIGSERIAL PRIMARY KEY,
  provider_id UUID NOT NULL REFERENCES providers(id),
  kind VARCHAR(16) NOT NULL CHECK (kind IN ('top_up', 'lead_charge', 'refund', 'adjustment')),
  amount_cents BIGINT NOT NULL CHECK (amount_cents <> 0),
  assignment_id UUID REFERENCES assignments(id),
  refund_id UUID REFERENCES refunds(id),
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_ledger_provider ON ledger_entries(provider_id, created_at);
-- One charge per assignment and one credit per refund, whatever is redelivered.
CREATE UNIQUE INDEX IF NOT EXISTS idx_ledger_one_charge
  ON ledger_entries(assignment_id) WHERE kind = 'lead_charge';
CREATE UNIQUE INDEX IF NOT EXISTS idx_ledger_one_refund
  ON ledger_entries(refund_id) WHERE kind = 'refund';

CREATE TABLE IF NOT EXISTS email_log (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  job_id VARCHAR(200) NOT NULL UNIQUE,
  smtp_message_id VARCHAR(500),
  to_address VARCHAR(320) NOT NULL,
  template VARCHAR(64) NOT NULL,
  status VARCHAR(16) NOT NULL CHECK (status IN ('sent', 'failed')),
  smtp_response TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

CREATE TABLE IF NOT EXISTS report_exports (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  kind VARCHAR(32) NOT NULL CHECK (kind IN ('assignments', 'ledger_statement')),
  requested_by UUID REFERENCES users(id),
  provider_id UUID REFERENCES providers(id),
  params JSONB NOT NULL DEFAULT '{}',
  status VARCHAR(16) NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'ready', 'failed')),
  file_path TEXT,
  row_count BIGINT,
  bytes BIGINT,
  duration_ms BIGINT,
  error TEXT,
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  finished_at TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS audit_log (
  id BIGSERIAL PRIMARY KEY,
  actor VARCHAR(200) NOT NULL,
  action VARCHAR(100) NOT NULL,
  entity_type VARCHAR(64) NOT NULL,
  entity_id VARCHAR(200),
  correlation_id VARCHAR(128),
  metadata JSONB NOT NULL DEFAULT '{}',
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE INDEX IF NOT EXISTS idx_audit_entity ON audit_log(entity_type, entity_id, created_at DESC);

CREATE TABLE IF NOT EXISTS scheduled_job_runs (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  job VARCHAR(100) NOT NULL,
  slot TIMESTAMPTZ NOT NULL,
  status VARCHAR(16) NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
  started_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  finished_at TIMESTAMPTZ,
  counts JSONB NOT NULL DEFAULT '{}',
  error TEXT,
  UNIQUE (job, slot)
);

CREATE TABLE IF NOT EXISTS processed_messages (
  consumer VARCHAR(100) NOT NULL,
  message_id VARCHAR(200) NOT NULL,
  processed_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  PRIMARY KEY (consumer, message_id)
);

-- The plan's table, column for column, then what capture, grouping and retry need.
CREATE TABLE IF NOT EXISTS dead_letter_queue (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  queue_name VARCHAR(100) NOT NULL,
  job_id VARCHAR(100),
  payload JSONB,
  error_message TEXT,
  stack_trace TEXT,
  attempts INT,
  failed_at TIMESTAMPTZ NOT NULL,
  resolved BOOLEAN DEFAULT FALSE,
  resolved_at TIMESTAMPTZ,
  resolved_by UUID REFERENCES users(id),
  created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
  original_exchange VARCHAR(255),
  original_routing_key VARCHAR(255),
  message_id VARCHAR(200),
  correlation_id VARCHAR(128),
  headers JSONB NOT NULL DEFAULT '{}',
  raw_body BYTEA NOT NULL DEFAULT '\\x',
  reason VARCHAR(32) NOT NULL DEFAULT 'error'
    CHECK (reason IN ('error', 'rejected', 'expired', 'maxlen', 'delivery_limit')),
  error_type VARCHAR(200),
  fingerprint VARCHAR(64),
  service VARCHAR(100),
  first_failed_at TIMESTAMPTZ,
  last_failed_at TIMESTAMPTZ,
  retry_count INT NOT NULL DEFAULT 0,
  status VARCHAR(16) NOT NULL DEFAULT 'failed' CHECK (status IN ('failed', 'retrying', 'resolved')),
  resolution VARCHAR(32)
);

CREATE INDEX IF NOT EXISTS idx_dlq_queue_failed_at
  ON dead_letter_queue(queue_name, failed_at DESC);

CREATE INDEX IF NOT EXISTS idx_dlq_resolved
  ON dead_letter_queue(resolved, failed_at DESC);

CREATE INDEX IF NOT EXISTS idx_dlq_fingerprint ON dead_letter_queue(fingerprint, status);
CREATE INDEX IF NOT EXISTS idx_dlq_message_id ON dead_letter_queue(message_id);
"""

DOWNGRADE = """
DROP TABLE IF EXISTS dead_letter_queue, processed_messages, scheduled_job_runs, audit_log, report_exports,
  email_log, ledger_entries, refunds, bad_lead_reports, assignments, leads, subscriptions, users,
  providers, lead_sources CASCADE;
"""


def statements(script: str) -> list[str]:
    """One statement per execute: asyncpg prepares statements, and a prepared statement holds one command."""
    found, current = [], []
    for line in script.splitlines():
        if line.strip().startswith("--") or not line.strip():
            continue
        current.append(line)
        inside_dollar_block = "\n".join(current).count("$$") % 2 == 1
        if line.rstrip().endswith(";") and not inside_dollar_block:
            found.append("\n".join(current))
            current = []
    return found


def upgrade() -> None:
    for statement in statements(UPGRADE):
        op.execute(statement)


def downgrade() -> None:
    for statement in statements(DOWNGRADE):
        op.execute(statement)
