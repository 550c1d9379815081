"""Start, serve, and drain on SIGTERM.

From the first SIGTERM (or SIGINT): /health answers 503, submissions answer
503 with Retry-After, the runner stops claiming jobs; the server keeps
answering and finishes the requests in flight. Running jobs get up to
APP_DRAIN_TIMEOUT_S to finish; whatever is still held then (timeout or a
second signal) is put back in the queue. The process then exits 0.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import time

from aiohttp import web

from . import api, frontend
from .config import Config
from .logs import EventLog
from .metrics import Metrics
from .queue import SCHEMA_VERSION, AsyncJobQueue, JobQueue
from .retention import Retention
from .runner import JobRunner
from .service import SERVER_OPTIONS, ServiceState

SERVICES = ("backend", "frontend")
_IN_FLIGHT_POLL_S = 0.05


class Signals:
    """Counts termination signals: `first` starts the drain, `second` cuts it short."""

    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.second = asyncio.Event()

    def received(self, signum: int) -> None:
        if self.first.is_set():
            self.second.set()
        self.first.set()


def instance_id(service: str, color: str) -> str:
    return f"{service}-{color}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


async def serve(cfg: Config, service: str) -> int:
    """Run `service` until a signal has drained it; return the exit code."""
    instance = instance_id(service, cfg.color)
    log = EventLog(service=service, color=cfg.color, version=cfg.version, instance=instance)
    metrics = Metrics(service=service, color=cfg.color, version=cfg.version)
    state = ServiceState(cfg=cfg, service=service, metrics=metrics, log=log, instance=instance)
    queue: AsyncJobQueue | None = None
    runner: JobRunner | None = None
    retention: Retention | None = None
    if service == "backend":
        queue = AsyncJobQueue(
            JobQueue(cfg.db_path, on_query=metrics.count_query, max_queued=cfg.max_queued_jobs)
        )
        if queue.sync.migrated_from is not None:
            log.event(
                "schema_migrated",
                db_path=cfg.db_path,
                from_version=queue.sync.migrated_from,
                to_version=SCHEMA_VERSION,
            )
        runner = JobRunner(cfg, queue, metrics, log, instance)
        retention = Retention(cfg, queue, metrics, log)
        app = api.make_app(state, queue, runner)
    else:
        app = frontend.make_app(state)

    loop = asyncio.get_running_loop()
    signals = Signals()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signals.received, signum)

    web_runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=5.0, **SERVER_OPTIONS
    )
    await web_runner.setup()
    site = web.TCPSite(web_runner, cfg.host, cfg.port, shutdown_timeout=5.0)
    try:
        await site.start()
    except OSError as exc:
        log.event("start_failed", level="error", error=str(exc), host=cfg.host, port=cfg.port)
        await web_runner.cleanup()
        if queue is not None:
            await queue.close()
        return 1
    if runner is not None:
        runner.start()
    if retention is not None:
        retention.start()
    if cfg.fault_crash_after_s > 0:
        loop.call_later(cfg.fault_crash_after_s, _crash, log, cfg.fault_crash_after_s)
    log.event(
        "started",
        pid=os.getpid(),
        host=cfg.host,
        port=cfg.port,
        workers=cfg.workers if runner else None,
        db_path=cfg.db_path if runner else None,
        drain_timeout_s=cfg.drain_timeout_s,
        metrics_enabled=cfg.metrics_enabled,
        idempotency_ttl_s=cfg.idempotency_ttl_s if runner else None,
        job_retention_s=cfg.job_retention_s if runner else None,
    )

    await signals.first.wait()
    if retention is not None:
        await retention.stop()  # no background writes while draining
    return await drain(cfg, state, signals, web_runner, runner, queue)


async def drain(
    cfg: Config,
    state: ServiceState,
    signals: Signals,
    web_runner: web.AppRunner,
    runner: JobRunner | None,
    queue: AsyncJobQueue | None,
) -> int:
    start = time.monotonic()
    deadline = start + cfg.drain_timeout_s
    state.draining = True
    state.metrics.draining.set(1)
    state.log.event(
        "drain_started",
        running_jobs=runner.running if runner else 0,
        in_flight_requests=state.in_flight,
        timeout_s=cfg.drain_timeout_s,
    )
    reason = "idle"
    completed = 0
    requeued: list[int] = []
    if runner is not None and queue is not None:
        completed_before = runner.completed
        await runner.stop_claiming()
        if not await runner.wait_idle(deadline - time.monotonic(), signals.second):
            reason = "second_signal" if signals.second.is_set() else "timeout"
        completed = runner.completed - completed_before
        try:
            requeued = await runner.abandon()
        except Exception as exc:  # the database is unreachable: the leases still expire
            state.log.event("requeue_failed", level="error", error=repr(exc))
        if requeued or reason != "idle":
            state.log.event(
                "jobs_requeued", count=len(requeued), job_ids=requeued[:100], reason=reason
            )
        await runner.close()
    # Requests still being answered get the rest of the drain time.
    while state.in_flight > 0 and time.monotonic() < deadline and not signals.second.is_set():
        await asyncio.sleep(_IN_FLIGHT_POLL_S)
    await web_runner.cleanup()
    if queue is not None:
        await queue.close()
    duration = time.monotonic() - start
    state.metrics.drain_duration.set(duration)
    state.log.event(
        "drain_finished",
        duration_s=round(duration, 3),
        reason=reason,
        jobs_completed=completed,
        jobs_requeued=len(requeued),
        timeout_s=cfg.drain_timeout_s,
    )
    return 0


def _crash(log: EventLog, after_s: float) -> None:
    log.event("fault_crash", level="error", after_s=after_s)
    os._exit(1)
