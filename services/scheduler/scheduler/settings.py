"""scheduler settings: the plan's job switches and their schedules (cron, UTC)."""

from pydantic import Field

from libs.settings import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "scheduler"
    http_port: int = Field(8104, ge=1, le=65535, description="Health and metrics.")
    subscription_reactivation_enabled: bool = Field(True, description="Run subscription-reactivation.")
    subscription_reactivation_schedule: str = Field("*/5 * * * *", description="Cron, UTC.")
    balance_reconciliation_enabled: bool = Field(True, description="Run balance-reconciliation.")
    balance_reconciliation_schedule: str = Field("0 3 * * *", description="Cron, UTC.")
    dlq_cleanup_enabled: bool = Field(True, description="Run dlq-cleanup.")
    dlq_cleanup_schedule: str = Field("0 0 * * 0", description="Cron, UTC.")
    dlq_retention_days: int = Field(30, ge=1, description="Resolved dead letters older than this are deleted.")

    def job_switches(self) -> dict[str, bool]:
        return {
            "subscription-reactivation": self.subscription_reactivation_enabled,
            "balance-reconciliation": self.balance_reconciliation_enabled,
            "dlq-cleanup": self.dlq_cleanup_enabled,
        }
