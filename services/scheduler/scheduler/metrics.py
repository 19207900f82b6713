"""scheduler instruments: claims, runs by status, run time per job, last success per job, discrepancies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from libs.telemetry import PeriodicRefresh, Telemetry, duration_histogram


@dataclass
class SchedulerMetrics:
    claimed: Counter
    runs: Counter
    duration: Histogram
    discrepancies: Counter
    last_success: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls, telemetry: Telemetry, switches: Mapping[str, bool]) -> SchedulerMetrics:
        meter = telemetry.meter
        metrics = cls(
            claimed=meter.create_counter(
                "fmhl_scheduled_job_claims_total", unit="", description="Slots this replica claimed, by trigger."
            ),
            runs=meter.create_counter(
                "fmhl_scheduled_job_runs_total", unit="", description="Job runs finished, by job and status."
            ),
            duration=duration_histogram(meter, "fmhl_scheduled_job_duration_ms", "Time of one job run."),
            discrepancies=meter.create_counter(
                "fmhl_balance_discrepancies_found_total", unit="", description="Providers whose balance != ledger."
            ),
        )

        def enabled(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(1 if on else 0, {"job": job}) for job, on in switches.items()]

        def last(_: CallbackOptions) -> Iterable[Observation]:
            return [Observation(at, {"job": job}) for job, at in metrics.last_success.items()]

        meter.create_observable_gauge(
            "fmhl_scheduler_job_enabled", callbacks=[enabled], unit="", description="1 when the job's switch is on."
        )
        meter.create_observable_gauge(
            "fmhl_scheduled_job_last_success_timestamp_seconds",
            callbacks=[last],
            unit="",
            description="Unix time the job last finished successfully (any replica).",
        )
        return metrics


class LastSuccessPoller:
    """Reads each job's last success from the database, so every replica reports it, not only the one that ran."""

    def __init__(self, engine: AsyncEngine, metrics: SchedulerMetrics, interval_s: float = 15.0) -> None:
        self.engine = engine
        self.metrics = metrics
        self._refresh = PeriodicRefresh(self.refresh, interval_s, "job-last-success")
        self.start = self._refresh.start
        self.stop = self._refresh.stop

    async def refresh(self) -> None:
        async with self.engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT job, EXTRACT(EPOCH FROM max(finished_at)) FROM scheduled_job_runs "
                    "WHERE status = 'succeeded' GROUP BY job"
                )
            )
            self.metrics.last_success = {job: float(at) for job, at in rows}
