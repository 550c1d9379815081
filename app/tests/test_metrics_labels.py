"""Known job label sets exist from the start, for every job kind there is."""

from __future__ import annotations

from archibald_app import jobs, metrics


def test_metrics_know_every_job_kind() -> None:
    assert set(metrics.JOB_KINDS) == set(jobs.KINDS)


def test_job_counters_start_at_zero() -> None:
    text = metrics.Metrics(version="v1", color="blue", service="backend").render().decode()
    for kind in jobs.KINDS:
        assert f'jobs_total{{kind="{kind}",status="requeued"}} 0.0' in text


def test_process_metrics_are_exported() -> None:
    text = metrics.Metrics(version="v1", color="blue", service="frontend").render().decode()
    assert "process_start_time_seconds " in text


def test_idempotency_outcomes_start_at_zero() -> None:
    text = metrics.Metrics(version="v1", color="blue", service="backend").render().decode()
    for outcome in metrics.IDEMPOTENCY_OUTCOMES:
        assert f'idempotent_submissions_total{{outcome="{outcome}"}} 0.0' in text
