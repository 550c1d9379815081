"""A bounded worker pool: the reference app's stand-in for the plan's browser pool.

A worker is a slot with an identity and a generation. A job runs on a worker
taken with `acquire()` and given back with `release()`. A worker on which a job
failed is thrown away and replaced by a fresh one (like a browser context that
crashed), which counts as a restart.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .metrics import Metrics


@dataclass(frozen=True)
class Worker:
    slot: int
    generation: int = 0

    @property
    def name(self) -> str:
        return f"w{self.slot}.{self.generation}"


class WorkerPool:
    """`size` workers; `acquire()` waits while all of them are busy."""

    def __init__(self, size: int, metrics: Metrics | None = None) -> None:
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.size = size
        self._metrics = metrics
        self._free: asyncio.Queue[Worker] = asyncio.Queue()
        for slot in range(size):
            self._free.put_nowait(Worker(slot))
        self.restarts = 0
        self.waiting = 0
        if metrics is not None:
            metrics.pool_size.set(size)
            metrics.pool_busy.set(0)

    @property
    def busy(self) -> int:
        return self.size - self._free.qsize()

    def full(self) -> bool:
        """True when every worker is busy (an acquire would wait)."""
        return self._free.empty()

    async def acquire(self) -> Worker:
        self.waiting += 1
        self._note_waiting()
        try:
            worker = await self._free.get()
        finally:
            self.waiting -= 1
            self._note_waiting()
        if self._metrics is not None:
            self._metrics.pool_acquires.inc()
            self._metrics.pool_busy.set(self.busy)
        return worker

    def _note_waiting(self) -> None:
        if self._metrics is not None:
            self._metrics.pool_waiting.set(self.waiting)

    def note_wait(self) -> None:
        """Record that queued work waited for a free worker."""
        if self._metrics is not None:
            self._metrics.pool_waits.inc()

    def release(self, worker: Worker, *, broken: bool = False) -> Worker:
        """Give a worker back; a broken one is replaced by its next generation."""
        if broken:
            worker = Worker(worker.slot, worker.generation + 1)
            self.restarts += 1
            if self._metrics is not None:
                self._metrics.pool_restarts.inc()
        self._free.put_nowait(worker)
        if self._metrics is not None:
            self._metrics.pool_releases.inc()
            self._metrics.pool_busy.set(self.busy)
        return worker
