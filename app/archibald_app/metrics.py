"""Prometheus metrics (prometheus_client) in a registry owned by one application.

Labels are low-cardinality: `route` is the route template (never the raw
path; anything unrouted is "unmatched"), `kind` is one of the known job
kinds, `operation` one of the queue's fixed operation names.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# No `*_created` series: they double the scrape for nothing the dashboards use.
disable_created_metrics()

HTTP_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


JOB_KINDS = ("sleep", "fail")
JOB_STATUSES = ("submitted", "done", "retried", "failed", "requeued", "lost")
IDEMPOTENCY_OUTCOMES = ("created", "replayed", "mismatch")


class Metrics:
    """Every metric the service exports; backend-only metrics stay at zero in the frontend."""

    def __init__(self, *, service: str, color: str, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # process_start_time_seconds and friends: the restart-loop alert and the
        # release's metric analysis (judge only the new process) rely on them.
        ProcessCollector(registry=r)
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request duration in seconds, by route template",
            ["method", "route", "status_code"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests answered, by route template",
            ["method", "route", "status_code"],
            registry=r,
        )
        self.active_operations = Gauge(
            "active_operations",
            "Operations in progress: HTTP requests being handled plus jobs running",
            registry=r,
        )
        self.app_info = Gauge(
            "app_info",
            "Constant 1, labelled with the build",
            ["version", "color", "service"],
            registry=r,
        )
        self.app_info.labels(version=version, color=color, service=service).set(1)
        self.draining = Gauge("app_draining", "1 from the moment SIGTERM arrives", registry=r)
        self.drain_duration = Gauge(
            "app_drain_duration_seconds", "Duration of the last drain in seconds", registry=r
        )
        if service != "backend":
            return
        self.job_queue_size = Gauge(
            "job_queue_size", "Jobs waiting in the shared queue (status queued)", registry=r
        )
        # Storage, read at scrape time; the same database for both colours.
        self.jobs_stored = Gauge(
            "jobs_stored", "Jobs in the database, by status", ["status"], registry=r
        )
        self.job_db_size = Gauge(
            "job_db_size_bytes",
            "Size of the job database: its file plus the write-ahead log",
            registry=r,
        )
        self.job_db_fs_avail = Gauge(
            "job_db_filesystem_avail_bytes",
            "Bytes free (for the app's user) on the filesystem of the job database",
            registry=r,
        )
        self.job_db_fs_size = Gauge(
            "job_db_filesystem_size_bytes",
            "Size of the filesystem of the job database",
            registry=r,
        )
        self.jobs_purged = Counter(
            "jobs_purged_total",
            "Finished and failed jobs removed after APP_JOB_RETENTION_S",
            registry=r,
        )
        self.job_processing = Histogram(
            "job_processing_seconds",
            "Time spent running a job, by kind",
            ["kind"],
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.jobs = Counter(
            "jobs_total",
            "Jobs by kind and outcome (submitted, done, retried, failed, requeued, lost)",
            ["kind", "status"],
            registry=r,
        )
        # Known label sets start at 0, so dashboards and rates see a series
        # before the first job of a kind ends that way (not "no data").
        for kind in JOB_KINDS:
            for status in JOB_STATUSES:
                self.jobs.labels(kind=kind, status=status)
        self.idempotent_submissions = Counter(
            "idempotent_submissions_total",
            "Submissions with an Idempotency-Key: created a job, replayed the job of an"
            " earlier request with the same key, or refused (mismatch: key used for another body)",
            ["outcome"],
            registry=r,
        )
        for outcome in IDEMPOTENCY_OUTCOMES:
            self.idempotent_submissions.labels(outcome=outcome)
        self.pool_size = Gauge("worker_pool_size", "Workers in the pool", registry=r)
        self.pool_busy = Gauge("worker_pool_busy", "Workers running a job", registry=r)
        self.pool_acquires = Counter(
            "worker_pool_acquires_total", "Workers taken from the pool", registry=r
        )
        self.pool_releases = Counter(
            "worker_pool_releases_total", "Workers given back to the pool", registry=r
        )
        self.pool_waits = Counter(
            "worker_pool_waits_total",
            "Times queued work had to wait for a free worker",
            registry=r,
        )
        self.pool_restarts = Counter(
            "worker_pool_restarts_total",
            "Workers replaced after a job failed on them",
            registry=r,
        )
        self.pool_waiting = Gauge(
            "worker_pool_waiting", "Acquires waiting for a free worker now", registry=r
        )
        # The reference pool's workers are slots that cannot fail to start; the
        # series is the contract's (a browser launch can fail) and stays 0 here.
        self.pool_launch_failures = Counter(
            "worker_pool_launch_failures_total",
            "Worker launches that failed",
            registry=r,
        )
        self.db_queries = Counter(
            "db_queries_total", "Queries sent to the job database", ["operation"], registry=r
        )

    def count_query(self, operation: str) -> None:
        self.db_queries.labels(operation=operation).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
