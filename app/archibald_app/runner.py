"""The job runner: claims jobs from the shared queue and runs them on the worker pool.

One dispatcher task takes a free worker, then claims a job for this instance;
each job runs in its own task. A heartbeat task renews this instance's leases.
`stop_claiming()` ends the dispatcher (drain); `wait_idle()` waits for the
running jobs; `abandon()` cancels what is left and puts it back in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import jobs
from .config import Config
from .logs import EventLog
from .metrics import Metrics
from .queue import AsyncJobQueue, Job, is_storage_full
from .workers import Worker, WorkerPool


class JobRunner:
    def __init__(
        self,
        cfg: Config,
        queue: AsyncJobQueue,
        metrics: Metrics,
        log: EventLog,
        instance: str,
    ) -> None:
        self.cfg = cfg
        self.queue = queue
        self.metrics = metrics
        self.log = log
        self.instance = instance
        self.pool = WorkerPool(cfg.workers, metrics)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False
        self._in_claim = False
        self.completed = 0

    @property
    def running(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name="dispatcher")
        self._heartbeat = asyncio.create_task(self._renew(), name="heartbeat")

    def wake(self) -> None:
        """A job was submitted here: look for work now instead of at the next poll."""
        self._wake.set()

    async def stop_claiming(self) -> None:
        """End the dispatcher. A claim already sent to the database completes and
        its job runs like any other, so no job is held without being run."""
        self._stopping = True
        if self._dispatcher is not None:
            if not self._in_claim:
                self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None

    async def wait_idle(self, timeout: float, interrupt: asyncio.Event) -> bool:
        """Wait until no job runs, `timeout` passes or `interrupt` is set; True if idle."""
        deadline = time.monotonic() + timeout
        interrupted = asyncio.create_task(interrupt.wait())
        try:
            while self._tasks and not interrupt.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.wait(
                    [*self._tasks.values(), interrupted],
                    timeout=remaining,
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            interrupted.cancel()
        return not self._tasks

    async def abandon(self) -> list[int]:
        """Cancel the jobs still running, put back every job this instance holds."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        requeued = await self.queue.requeue_owned(self.instance)
        return requeued

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)

    # --- tasks ----------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while not self._stopping:
            waited = self.pool.full()
            worker = await self.pool.acquire()
            # Not cancelled while in a claim (see stop_claiming): a claimed job always runs.
            self._in_claim = True
            try:
                job = await self.queue.claim(self.instance, self.cfg.lease_s, self.cfg.max_attempts)
            except Exception as exc:  # a locked or broken database: retry later
                self.pool.release(worker)
                self.log.event("claim_error", level="error", error=repr(exc))
                await asyncio.sleep(self.cfg.poll_interval_s)
                continue
            finally:
                self._in_claim = False
            if job is None:
                self.pool.release(worker)
                if self._stopping:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.cfg.poll_interval_s)
                continue
            if waited:
                self.pool.note_wait()
            task = asyncio.create_task(self._run(worker, job), name=f"job-{job.id}")
            self._tasks[job.id] = task
            task.add_done_callback(functools.partial(self._forget, job.id))

    def _forget(self, job_id: int, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(job_id, None)

    async def _renew(self) -> None:
        interval = self.cfg.lease_s / 3
        while True:
            await asyncio.sleep(interval)
            if not self._tasks:
                continue
            try:
                await self.queue.renew_leases(self.instance, self.cfg.lease_s)
            except Exception as exc:
                self.log.event("lease_renew_error", level="error", error=repr(exc))

    async def _run(self, worker: Worker, job: Job) -> None:
        self.log.event(
            "job_started",
            job_id=job.id,
            kind=job.kind,
            attempt=job.attempts,
            runs=job.runs,
            worker=worker.name,
        )
        start = time.monotonic()
        broken = False
        try:
            result: dict[str, Any] = await jobs.run(job.kind, job.params, self.cfg.job_max_s)
        except asyncio.CancelledError:
            self.log.event("job_interrupted", job_id=job.id, kind=job.kind)
            raise
        except Exception as exc:
            broken = True
            status = await self._record(
                job,
                functools.partial(
                    self.queue.fail, job.id, self.instance, str(exc), self.cfg.max_attempts
                ),
            )
            outcome = {"queued": "retried", "failed": "failed", None: "lost"}[status]
            self._finished(job, outcome, start, error=str(exc))
        else:
            ok = await self._record(
                job, functools.partial(self.queue.finish, job.id, self.instance, result)
            )
            self._finished(job, "done" if ok else "lost", start)
        finally:
            self.pool.release(worker, broken=broken)

    async def _record(self, job: Job, write: Callable[[], Awaitable[Any]]) -> Any:
        """Write a job's outcome; while the disk is full, keep the outcome and retry.

        Giving up would leave the job to run again once its lease expires; the
        retry ends as soon as space returns (or the drain gives up on this job,
        which then goes back to the queue).
        """
        attempt = 0
        while True:
            try:
                return await write()
            except Exception as exc:
                if not is_storage_full(exc):
                    raise
                if attempt % 25 == 0:
                    self.log.event(
                        "job_record_retry",
                        level="error",
                        job_id=job.id,
                        reason="storage_full",
                        attempts=attempt + 1,
                        error=str(exc),
                    )
                attempt += 1
                await asyncio.sleep(self.cfg.poll_interval_s)

    def _finished(self, job: Job, outcome: str, start: float, error: str | None = None) -> None:
        duration = time.monotonic() - start
        self.metrics.job_processing.labels(kind=job.kind).observe(duration)
        self.metrics.jobs.labels(kind=job.kind, status=outcome).inc()
        if outcome in ("done", "failed"):
            self.completed += 1
        fields: dict[str, Any] = {"job_id": job.id, "kind": job.kind, "status": outcome}
        if error is not None:
            fields["error"] = error
        self.log.event("job_finished", duration_s=round(duration, 3), **fields)
