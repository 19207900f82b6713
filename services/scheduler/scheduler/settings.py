"""scheduler settings: the plan's job switches, their schedules (cron, UTC), and how late a run may start."""

from datetime import datetime

from croniter import croniter
from pydantic import Field, field_validator

from libs.auth import AuthSettingsMixin
from libs.settings import WorkerSettings


class Settings(AuthSettingsMixin, WorkerSettings):
    service_name: str = "scheduler"
    http_port: int = Field(8104, ge=1, le=65535, description="Jobs admin API, health and metrics.")
    handler_timeout_s: float = Field(
        300.0, gt=0, le=3600, description="A job run taking longer fails (and is retried)."
    )
    subscription_reactivation_enabled: bool = Field(True, description="Run subscription-reactivation.")
    subscription_reactivation_schedule: str = Field("*/5 * * * *", description="Cron, UTC.")
    balance_reconciliation_enabled: bool = Field(True, description="Run balance-reconciliation.")
    balance_reconciliation_schedule: str = Field("0 3 * * *", description="Cron, UTC.")
    dlq_cleanup_enabled: bool = Field(True, description="Run dlq-cleanup.")
    dlq_cleanup_schedule: str = Field("0 0 * * 0", description="Cron, UTC.")
    dlq_retention_days: int = Field(30, ge=1, description="Resolved dead letters older than this are deleted.")
    dlq_cleanup_batch: int = Field(5_000, ge=100, le=100_000, description="Rows deleted per statement.")
    misfire_grace_s: float = Field(
        600.0, ge=0, description="After downtime, missed slots coalesce into one run if the latest is this recent."
    )
    tick_s: float = Field(5.0, gt=0, le=60, description="How often due slots are looked for (in clock seconds).")
    clock_rate: float = Field(
        1.0, ge=1.0, le=100_000, description="Clock seconds per real second: above 1 only for drills and tests."
    )
    clock_start: datetime | None = Field(None, description="With CLOCK_RATE: the clock's time at CLOCK_EPOCH.")
    clock_epoch: float | None = Field(None, description="With CLOCK_RATE: the real Unix time the clock starts at.")

    @field_validator("subscription_reactivation_schedule", "balance_reconciliation_schedule", "dlq_cleanup_schedule")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a valid cron expression")
        return value

    def schedules(self) -> dict[str, tuple[str, bool]]:
        return {
            "subscription-reactivation": (
                self.subscription_reactivation_schedule,
                self.subscription_reactivation_enabled,
            ),
            "balance-reconciliation": (self.balance_reconciliation_schedule, self.balance_reconciliation_enabled),
            "dlq-cleanup": (self.dlq_cleanup_schedule, self.dlq_cleanup_enabled),
        }

    def job_switches(self) -> dict[str, bool]:
        return {job: enabled for job, (_, enabled) in self.schedules().items()}
