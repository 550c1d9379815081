"""Bounded job storage: finished and failed jobs older than APP_JOB_RETENTION_S go.

Without it every job ever submitted stays in the database, and an anonymous
flood of submissions grows the file until the disk is full (then 507). One
task per backend sweeps every APP_RETENTION_INTERVAL_S, in batches of short
write transactions so submissions and claims never wait long; both colours
may sweep at once (a row is deleted once). Queued and running jobs are never
touched. APP_JOB_RETENTION_S=0 keeps every job.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from .config import Config
from .logs import EventLog
from .metrics import Metrics
from .queue import AsyncJobQueue

BATCH = 1000
# At most this many batches per sweep, so a sweep after a long pause ends too.
MAX_BATCHES = 50


class Retention:
    def __init__(self, cfg: Config, queue: AsyncJobQueue, metrics: Metrics, log: EventLog) -> None:
        self.cfg = cfg
        self.queue = queue
        self.metrics = metrics
        self.log = log
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.cfg.job_retention_s > 0

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sweep(self) -> int:
        """Remove what is past retention now; return how many jobs went."""
        cutoff = time.time() - self.cfg.job_retention_s
        removed = 0
        for _ in range(MAX_BATCHES):
            count = await self.queue.purge_finished(cutoff, BATCH)
            removed += count
            if count < BATCH:
                break
        if removed:
            self.metrics.jobs_purged.inc(removed)
            self.log.event("jobs_purged", count=removed, older_than_s=self.cfg.job_retention_s)
        return removed

    async def _loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # a locked or full database: try again next time
                self.log.event("purge_error", level="error", error=repr(exc))
            await asyncio.sleep(self.cfg.retention_interval_s)
