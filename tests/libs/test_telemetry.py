"""Metric names as Prometheus sees them are exactly the plan's."""

from libs.telemetry import duration_histogram, setup_telemetry


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
    telemetry.meter.create_counter("fmhl_leads_submitted_total", unit="").add(3)
    text = telemetry.exposition().decode()
    assert "fmhl_leads_submitted_total 3.0" in text
    assert "_total_total" not in text


def test_labels_are_exposed_and_each_process_has_its_own_registry() -> None:
    first, second = setup_telemetry("a"), setup_telemetry("b")
    first.meter.create_counter("fmhl_jobs_completed_total", unit="").add(1, {"queue": "email"})
    assert 'fmhl_jobs_completed_total{queue="email"} 1.0' in first.exposition().decode()
    assert "fmhl_jobs_completed_total" not in second.exposition().decode()
