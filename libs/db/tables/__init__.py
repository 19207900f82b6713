"""The schema, declared once: SQLModel tables (one module per aggregate) with their enums.

Queries, the Alembic migrations (`target_metadata`), API read models and tests all stand on these classes.
To add a column: add the field here, `alembic revision --autogenerate -m "..."`, review the generated
migration, and run the drift test (tests/libs/db/test_schema_drift.py).
"""

from sqlmodel import SQLModel

# PostgreSQL's own constraint names, so that what create_all or autogenerate would produce matches what the
# hand-written migrations created (`users_email_key`, `subscriptions_provider_id_fkey`, ...).
SQLModel.metadata.naming_convention = {
    "pk": "%(table_name)s_pkey",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "fk": "%(table_name)s_%(column_0_name)s_fkey",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
}

from libs.db.tables.accounts import LeadSource, User, UserRole  # noqa: E402
from libs.db.tables.audit import AuditEntry  # noqa: E402
from libs.db.tables.console_sessions import ConsoleSession  # noqa: E402
from libs.db.tables.dead_letter_edits import DeadLetterEdit  # noqa: E402
from libs.db.tables.dead_letters import (  # noqa: E402
    DeadLetter,
    DeadLetterEvent,
    DeadLetterGroupCount,
    DeadLetterReason,
    DeadLetterRetry,
    DeadLetterStatus,
    Redrive,
    RedriveItem,
    RedriveItemState,
    RedriveStatus,
    Resolution,
    RetryOutcome,
)
from libs.db.tables.exports import ExportKind, ExportStatus, ReportExport  # noqa: E402
from libs.db.tables.leads import Assignment, AssignmentStatus, BadLeadReport, Lead, LeadStatus, ReportStatus  # noqa: E402
from libs.db.tables.ledger import LedgerEntry, LedgerKind, Refund  # noqa: E402
from libs.db.tables.messages import EmailLog, EmailStatus, ProcessedMessage  # noqa: E402
from libs.db.tables.outbox import OutboxMessage  # noqa: E402
from libs.db.tables.providers import PausedReason, Provider, Subscription, SubscriptionStatus  # noqa: E402
from libs.db.tables.rate_limits import RateLimitHit  # noqa: E402
from libs.db.tables.scheduling import (  # noqa: E402
    BalanceDiscrepancy,
    RunStatus,
    RunTrigger,
    ScheduledJob,
    ScheduledJobRun,
)

metadata = SQLModel.metadata

__all__ = [
    "Assignment",
    "AssignmentStatus",
    "AuditEntry",
    "BadLeadReport",
    "BalanceDiscrepancy",
    "ConsoleSession",
    "DeadLetter",
    "DeadLetterEdit",
    "DeadLetterEvent",
    "DeadLetterGroupCount",
    "DeadLetterReason",
    "DeadLetterRetry",
    "DeadLetterStatus",
    "EmailLog",
    "EmailStatus",
    "ExportKind",
    "ExportStatus",
    "Lead",
    "LeadSource",
    "LeadStatus",
    "LedgerEntry",
    "LedgerKind",
    "OutboxMessage",
    "PausedReason",
    "ProcessedMessage",
    "Provider",
    "RateLimitHit",
    "Redrive",
    "RedriveItem",
    "RedriveItemState",
    "RedriveStatus",
    "Refund",
    "ReportExport",
    "ReportStatus",
    "Resolution",
    "RetryOutcome",
    "RunStatus",
    "RunTrigger",
    "ScheduledJob",
    "ScheduledJobRun",
    "Subscription",
    "SubscriptionStatus",
    "User",
    "UserRole",
    "metadata",
]
