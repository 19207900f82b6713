"""scheduler instruments: claims, runs by status, run time per job, last success per job, discrepancies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram, Observation
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from libs.db.tables import RunStatus, ScheduledJobRun
from libs.telemetry import DatabaseGauge, Telemetry, counter, duration_histogram, gauge

# The job's label is `scheduled_job`, never `job`: Prometheus reserves `job` for the scrape target and renames a
# metric's own `job` to `exported_job`, so alerts and dashboards on it would match nothing.

LAST_SUCCESS_PER_JOB: Select[str, float] = (
    select(
        col(ScheduledJobRun.job).label("scheduled_job"),
        func.extract("epoch", func.max(col(ScheduledJobRun.finished_at))).label("value"),
    )
    .where(col(ScheduledJobRun.status) == RunStatus.succeeded)
    .group_by(col(ScheduledJobRun.job))
)

# A finished run refreshes it at once, so the replica that ran the job reports it without waiting for the poll.
LastSuccessPoller = DatabaseGauge


@dataclass(frozen=True)
class SchedulerMetrics:
    claimed: Counter
    runs: Counter
    duration: Histogram
    discrepancies: Counter

    @classmethod
    def create(cls, telemetry: Telemetry, switches: Mapping[str, bool]) -> SchedulerMetrics:
        meter = telemetry.meter
        gauge(
            meter,
            "fmhl_scheduler_job_enabled",
            "1 when the job's switch is on.",
            lambda: [Observation(1 if on else 0, {"scheduled_job": job}) for job, on in switches.items()],
        )
        return cls(
            claimed=counter(meter, "fmhl_scheduled_job_claims_total", "Slots this replica claimed, by trigger."),
            runs=counter(meter, "fmhl_scheduled_job_runs_total", "Job runs finished, by job and status."),
            duration=duration_histogram(meter, "fmhl_scheduled_job_duration_ms", "Time of one job run."),
            discrepancies=counter(
                meter, "fmhl_balance_discrepancies_found_total", "Providers whose balance != ledger."
            ),
        )


def last_success_gauge(telemetry: Telemetry, engine: AsyncEngine, interval_s: float = 15.0) -> LastSuccessPoller:
    """Read from the database, so every replica reports each job's last success, not only the one that ran it."""
    return DatabaseGauge(
        telemetry.meter,
        "fmhl_scheduled_job_last_success_timestamp_seconds",
        "Unix time the job last finished successfully (any replica).",
        engine=engine,
        statement=LAST_SUCCESS_PER_JOB,
        label="scheduled_job",
        interval_s=interval_s,
    )
