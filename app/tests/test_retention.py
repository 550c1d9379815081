"""Bounded job storage (issue 18): finished and failed jobs past APP_JOB_RETENTION_S
are removed, the database stops growing, and its size is exported as metrics."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from apptest_support import backend_config, run_backend
from archibald_app.config import ConfigError, from_env
from archibald_app.logs import EventLog
from archibald_app.metrics import Metrics
from archibald_app.queue import AsyncJobQueue, JobQueue
from archibald_app.retention import Retention
from archibald_app.service import ServiceState

JOBS = 10_000
# With retention on, the test sweeps every SWEEP_EVERY jobs what has finished.
SWEEP_EVERY = 500
# What the database (file plus write-ahead log) stays under with retention on.
BOUND_BYTES = 6 * 1024 * 1024


def _finished_job(q: JobQueue, finish: bool = True) -> int:
    job_id = q.submit("sleep", {"seconds": 0.1, "cpu": 0.1})
    job = q.claim("w", lease_s=30, max_attempts=3)
    assert job is not None and job.id == job_id
    if finish:
        assert q.finish(job_id, "w", {"slept_s": 0.1})
    return job_id


def test_purge_removes_only_finished_and_failed_jobs_past_the_cutoff(tmp_path: Path) -> None:
    q = JobQueue(str(tmp_path / "j.db"))
    done = _finished_job(q)
    failed = q.submit("fail", {"seconds": 0, "message": "x"})
    claimed = q.claim("w", lease_s=30, max_attempts=1)
    assert claimed is not None and q.fail(failed, "w", "x", max_attempts=1) == "failed"
    cutoff = time.time() + 0.001
    time.sleep(0.01)
    late = _finished_job(q)  # finished after the cutoff
    running = _finished_job(q, finish=False)
    queued = q.submit("sleep", {"seconds": 1})
    assert q.purge_finished(cutoff) == 2
    assert q.get(done) is None and q.get(failed) is None
    assert [q.get(i).status for i in (late, running, queued)] == ["done", "running", "queued"]  # type: ignore[union-attr]
    assert q.purge_finished(cutoff) == 0


def test_purge_works_in_batches(tmp_path: Path) -> None:
    q = JobQueue(str(tmp_path / "j.db"))
    for _ in range(25):
        _finished_job(q)
    cutoff = time.time() + 1
    assert [q.purge_finished(cutoff, batch=10) for _ in range(4)] == [10, 10, 5, 0]


def _db_size(q: JobQueue) -> tuple[int, int]:
    """(database file, write-ahead log) in bytes."""
    wal = Path(q.path + "-wal")
    return os.stat(q.path).st_size, wal.stat().st_size if wal.exists() else 0


@pytest.mark.parametrize("retention", [False, True], ids=["retention_off", "retention_on"])
def test_database_size_after_10000_jobs(tmp_path: Path, retention: bool) -> None:
    """Without retention every job stays; with it the file stops growing."""
    q = JobQueue(str(tmp_path / "j.db"))
    started = time.monotonic()
    purged = 0
    for n in range(1, JOBS + 1):
        _finished_job(q)
        if retention and n % SWEEP_EVERY == 0:
            purged += q.purge_finished(time.time() + 1)
    db_file, wal = _db_size(q)
    stored = sum(q.count_by_status().values())
    print(
        f"\n[retention {'on' if retention else 'off'}] {JOBS} jobs in "
        f"{time.monotonic() - started:.1f} s: database {db_file / 1024:.0f} KiB + "
        f"write-ahead log {wal / 1024:.0f} KiB, {stored} jobs stored, {purged} removed"
    )
    if retention:
        assert stored == 0 and purged == JOBS
        assert db_file + wal < BOUND_BYTES, (db_file, wal)
        assert db_file < 512 * 1024, db_file  # freed pages are reused: ~SWEEP_EVERY jobs
    else:
        assert stored == JOBS
        assert db_file > 1024 * 1024, db_file  # grows with every job: the defect


def test_retention_task_sweeps_and_counts(tmp_path: Path) -> None:
    cfg = backend_config(
        tmp_path, job_retention_s=0.2, idempotency_ttl_s=0.1, retention_interval_s=0.05
    )

    async def main() -> None:
        sync = JobQueue(cfg.db_path)
        for _ in range(3):
            _finished_job(sync)
        queue = AsyncJobQueue(sync)
        metrics = Metrics(service="backend", color="blue", version="v7")
        with open(os.devnull, "w") as devnull:
            retention = Retention(cfg, queue, metrics, EventLog(stream=devnull))
            retention.start()
            deadline = time.monotonic() + 5
            while sum(sync.count_by_status().values()) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await retention.stop()
        assert sync.count_by_status()["done"] == 0
        assert "jobs_purged_total 3.0" in metrics.render().decode()
        await queue.close()

    asyncio.run(main())


def test_storage_is_exported_as_metrics(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        await client.post("/api/jobs", json={"kind": "sleep", "params": {"seconds": 1}})
        text = await (await client.get("/metrics")).text()
        values = {
            line.split(" ")[0]: float(line.split(" ")[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        assert values["job_queue_size"] == 1
        assert values['jobs_stored{status="queued"}'] == 1
        assert values['jobs_stored{status="done"}'] == 0
        assert values["job_db_size_bytes"] >= os.stat(tmp_path / "j.db").st_size > 0
        fs = os.statvfs(tmp_path)
        assert values["job_db_filesystem_size_bytes"] == fs.f_blocks * fs.f_frsize
        assert 0 < values["job_db_filesystem_avail_bytes"] <= values["job_db_filesystem_size_bytes"]
        assert values["jobs_purged_total"] == 0

    run_backend(tmp_path, scenario)


def test_retention_defaults_and_keys_never_outlive_their_job(tmp_path: Path) -> None:
    db = {"APP_DB_PATH": str(tmp_path / "j.db")}
    cfg = from_env(db)
    assert (cfg.job_retention_s, cfg.retention_interval_s) == (604800.0, 60.0)  # 7 days
    assert from_env({**db, "APP_JOB_RETENTION_S": "0"}).job_retention_s == 0  # keep all
    with pytest.raises(ConfigError, match=r"at least APP_IDEMPOTENCY_TTL_S \(86400 s\)"):
        from_env({**db, "APP_JOB_RETENTION_S": "3600"})
    short = from_env({**db, "APP_JOB_RETENTION_S": "3600", "APP_IDEMPOTENCY_TTL_S": "3600"})
    assert short.job_retention_s == 3600
    with pytest.raises(ConfigError, match="APP_RETENTION_INTERVAL_S"):
        from_env({**db, "APP_RETENTION_INTERVAL_S": "0"})
