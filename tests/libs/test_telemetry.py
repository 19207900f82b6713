"""Metric names as Prometheus sees them are exactly the plan's; gauges read from the database follow its rows;
telemetry switched off records nothing, and spans are sampled as configured."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from opentelemetry.metrics import Observation
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from sqlalchemy import Select, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from libs.db.tables import RateLimitHit
from libs.settings import ServiceSettings, load_settings
from libs.telemetry import DatabaseGauge, counter, duration_histogram, gauge, setup_telemetry, telemetry_for
from libs.telemetry.process import sampler


def test_ms_histogram_keeps_its_name_and_has_the_alert_boundaries() -> None:
    telemetry = setup_telemetry("svc")
    duration_histogram(telemetry.meter, "fmhl_distribution_duration_ms", "d").record(1500.0)
    text = telemetry.exposition().decode()
    assert "# TYPE fmhl_distribution_duration_ms histogram" in text
    assert 'fmhl_distribution_duration_ms_bucket{le="1000.0"} 0.0' in text
    assert 'fmhl_distribution_duration_ms_bucket{le="2000.0"} 1.0' in text
    assert "milliseconds" not in text


def test_counter_ending_in_total_is_not_doubled() -> None:
    telemetry = setup_telemetry("svc")
    counter(telemetry.meter, "fmhl_leads_submitted_total", "d").add(3)
    text = telemetry.exposition().decode()
    assert "fmhl_leads_submitted_total 3.0" in text
    assert "_total_total" not in text


def test_labels_are_exposed_and_each_process_has_its_own_registry() -> None:
    first, second = setup_telemetry("a"), setup_telemetry("b")
    counter(first.meter, "fmhl_jobs_completed_total", "d").add(1, {"queue": "email"})
    assert 'fmhl_jobs_completed_total{queue="email"} 1.0' in first.exposition().decode()
    assert "fmhl_jobs_completed_total" not in second.exposition().decode()


def test_a_gauge_reports_what_its_callback_answers_at_scrape_time() -> None:
    telemetry = setup_telemetry("svc")
    switches = {"cleanup": True}
    gauge(
        telemetry.meter,
        "fmhl_job_enabled",
        "d",
        lambda: [Observation(int(on), {"job": job}) for job, on in switches.items()],
    )
    assert 'fmhl_job_enabled{job="cleanup"} 1.0' in telemetry.exposition().decode()
    switches["cleanup"] = False
    assert 'fmhl_job_enabled{job="cleanup"} 0.0' in telemetry.exposition().decode()


async def test_a_database_gauge_follows_its_rows_and_drops_a_label_whose_rows_are_gone(engine: AsyncEngine) -> None:
    buckets = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(2)]
    hits_per_bucket: Select[str, int] = (
        select(col(RateLimitHit.bucket).label("bucket"), func.count().label("value"))
        .where(col(RateLimitHit.bucket).in_(buckets))
        .group_by(col(RateLimitHit.bucket))
    )
    telemetry = setup_telemetry("svc")
    hits = DatabaseGauge(
        telemetry.meter, "fmhl_test_hits", "d", engine=engine, statement=hits_per_bucket, label="bucket",
        interval_s=3600,
    )  # fmt: skip
    expires = datetime(2100, 1, 1, tzinfo=UTC)
    async with engine.begin() as connection:
        for bucket, count in zip(buckets, (2, 1), strict=True):
            await connection.execute(insert(RateLimitHit), [{"bucket": bucket, "expires_at": expires}] * count)
    await hits.refresh()
    text = telemetry.exposition().decode()
    assert f'fmhl_test_hits{{bucket="{buckets[0]}"}} 2.0' in text
    assert f'fmhl_test_hits{{bucket="{buckets[1]}"}} 1.0' in text

    async with engine.begin() as connection:
        await connection.execute(delete(RateLimitHit).where(col(RateLimitHit.bucket) == buckets[1]))
    await hits.refresh()
    text = telemetry.exposition().decode()
    assert f'fmhl_test_hits{{bucket="{buckets[0]}"}} 2.0' in text
    assert buckets[1] not in text


def test_switched_off_telemetry_records_no_instrument_and_no_span() -> None:
    telemetry = setup_telemetry("svc", metrics=False, traces=False)
    counter(telemetry.meter, "fmhl_leads_submitted_total", "d").add(3)
    with telemetry.tracer.start_as_current_span("work") as span:
        assert not span.is_recording()
        assert not span.get_span_context().is_valid
    assert "fmhl_leads_submitted_total" not in telemetry.exposition().decode()
    assert not telemetry.enabled


def test_telemetry_enabled_false_turns_off_metrics_and_traces() -> None:
    telemetry = telemetry_for(service_settings(telemetry_enabled=False))
    assert (telemetry.metrics_enabled, telemetry.traces_enabled, telemetry.enabled) == (False, False, False)


def test_metrics_enabled_false_turns_off_only_the_instruments() -> None:
    telemetry = telemetry_for(service_settings(metrics_enabled=False))
    assert (telemetry.metrics_enabled, telemetry.traces_enabled) == (False, True)


def test_with_no_exporter_a_span_is_not_recorded_yet_has_ids_for_logs_and_headers() -> None:
    telemetry = setup_telemetry("svc", "none")
    with telemetry.tracer.start_as_current_span("work") as span:
        assert not span.is_recording()
        assert span.get_span_context().is_valid


def test_a_sample_ratio_of_zero_records_no_new_trace() -> None:
    decision = sampler("console", 0.0).should_sample(None, trace_id=random_trace_id(), name="work").decision
    assert decision is Decision.DROP


def test_a_sample_ratio_of_one_records_every_new_trace() -> None:
    decision = sampler("console", 1.0).should_sample(None, trace_id=random_trace_id(), name="work").decision
    assert decision is Decision.RECORD_AND_SAMPLE


def test_a_message_follows_the_sampling_decision_of_its_caller() -> None:
    sampled_parent = NonRecordingSpan(
        SpanContext(random_trace_id(), 1, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    )
    context = set_span_in_context(sampled_parent)
    decision = sampler("console", 0.0).should_sample(context, trace_id=random_trace_id(), name="work").decision
    assert decision is Decision.RECORD_AND_SAMPLE


def random_trace_id() -> int:
    return uuid.uuid4().int


def service_settings(**switches: bool) -> ServiceSettings:
    return load_settings(
        ServiceSettings,
        service_name="svc",
        http_port=8000,
        database_url="postgresql+asyncpg://u:p-not-a-placeholder@127.0.0.1/db",
        rabbitmq_url="amqp://u:p-not-a-placeholder@127.0.0.1/vhost",
        **switches,
    )
