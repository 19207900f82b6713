"""scheduler instruments."""

from collections.abc import Iterable, Mapping

from opentelemetry.metrics import CallbackOptions, Observation

from libs.telemetry import Telemetry


def register_job_switches(telemetry: Telemetry, switches: Mapping[str, bool]) -> None:
    """`fmhl_scheduler_job_enabled{job}`: 1 when the job's switch is on, so a turned-off job is visible."""

    def observe(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1 if enabled else 0, {"job": job}) for job, enabled in switches.items()]

    telemetry.meter.create_observable_gauge(
        "fmhl_scheduler_job_enabled",
        callbacks=[observe],
        unit="",
        description="1 when the job's switch is on.",
    )
