"""The worker pool: bounded, waits when full, replaces broken workers, all in metrics."""

from __future__ import annotations

import asyncio

import pytest
from archibald_app.metrics import Metrics
from archibald_app.workers import WorkerPool
from prometheus_client import CollectorRegistry


def value(registry: CollectorRegistry, name: str) -> float:
    sample = registry.get_sample_value(name)
    assert sample is not None, name
    return sample


def test_pool_is_bounded_and_counts_everything() -> None:
    async def main() -> None:
        metrics = Metrics(service="backend", color="blue", version="v1")
        reg = metrics.registry
        pool = WorkerPool(2, metrics)
        a = await pool.acquire()
        b = await pool.acquire()
        assert pool.full() and pool.busy == 2
        assert value(reg, "worker_pool_busy") == 2
        waiter = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        assert pool.waiting == 1 and value(reg, "worker_pool_waiting") == 1
        pool.release(a)
        c = await asyncio.wait_for(waiter, 1)
        assert c == a
        assert pool.waiting == 0 and value(reg, "worker_pool_waiting") == 0
        replacement = pool.release(b, broken=True)
        assert (replacement.slot, replacement.generation) == (b.slot, b.generation + 1)
        pool.release(c)
        pool.note_wait()
        assert pool.busy == 0
        assert value(reg, "worker_pool_size") == 2
        assert value(reg, "worker_pool_busy") == 0
        assert value(reg, "worker_pool_acquires_total") == 3
        assert value(reg, "worker_pool_releases_total") == 3
        assert value(reg, "worker_pool_restarts_total") == 1
        assert value(reg, "worker_pool_waits_total") == 1
        assert value(reg, "worker_pool_launch_failures_total") == 0

    asyncio.run(main())


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pool size must be >= 1, got 0"):
        WorkerPool(0)
