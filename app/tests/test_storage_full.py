"""A full disk under the job database: submissions are refused with 507 and a
clear error, nothing accepted before is lost, a finished job's outcome is kept
until it can be written, and service resumes when space returns.

The disk is "filled" with SQLite's own limit (PRAGMA max_page_count), which
fails writes with the same SQLITE_FULL error as a full file system; the
whole-stack scenario fills a real one (molecule/default/tests/test_5_faults.py).
"""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from archibald_app import api
from archibald_app.config import Config
from archibald_app.logs import EventLog
from archibald_app.metrics import Metrics
from archibald_app.queue import AsyncJobQueue, JobQueue
from archibald_app.runner import JobRunner
from archibald_app.service import ServiceState


def fill(queue: AsyncJobQueue) -> None:
    """Cap the database at its current size: the next new page fails with SQLITE_FULL."""
    db = queue.sync._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")


def free(queue: AsyncJobQueue) -> None:
    queue.sync._db.execute("PRAGMA max_page_count = 1073741823")


def events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_full_disk_refuses_submissions_keeps_jobs_and_recovers(tmp_path: Path) -> None:
    cfg = Config(db_path=str(tmp_path / "j.db"), color="blue", version="v7")
    stream = io.StringIO()

    async def main() -> None:
        log = EventLog(stream=stream)
        metrics = Metrics(service="backend", color=cfg.color, version=cfg.version)
        state = ServiceState(cfg=cfg, service="backend", metrics=metrics, log=log, instance="t")
        queue = AsyncJobQueue(JobQueue(cfg.db_path))
        runner = JobRunner(cfg, queue, metrics, log, "t")  # not started: jobs stay queued
        body = {"kind": "sleep", "params": {"seconds": 0, "cpu": 0}}
        async with TestClient(TestServer(api.make_app(state, queue, runner))) as client:
            accepted = []
            for _ in range(5):
                r = await client.post("/api/jobs", json=body)
                assert r.status == 202
                accepted.append((await r.json())["id"])
            fill(queue)
            refused = None
            for _ in range(5000):  # until the last page has no room left
                r = await client.post("/api/jobs", json=body)
                if r.status == 202:
                    accepted.append((await r.json())["id"])
                    continue
                refused = r
                break
            assert refused is not None, "the capped database never filled up"
            assert refused.status == 507
            assert refused.headers["Retry-After"] == str(api.RETRY_AFTER_S)
            error = (await refused.json())["error"]
            assert "job store is full" in error and "not accepted" in error
            for job_id in accepted:  # reads still work, nothing accepted is gone
                r = await client.get(f"/api/jobs/{job_id}")
                assert r.status == 200 and (await r.json())["status"] == "queued"
            free(queue)
            r = await client.post("/api/jobs", json=body)
            assert r.status == 202
        await queue.close()

    asyncio.run(main())
    rejected = [e for e in events(stream) if e.get("event") == "submit_rejected"]
    assert rejected and rejected[0]["reason"] == "storage_full"


def test_outcome_of_a_job_is_kept_while_the_disk_is_full(tmp_path: Path) -> None:
    """The job's outcome write fails with SQLITE_FULL three times, then succeeds: the
    runner keeps the outcome, retries, and the job ends done having run once."""
    cfg = Config(db_path=str(tmp_path / "j.db"), color="blue", version="v7", poll_interval_s=0.05)
    stream = io.StringIO()
    failures = 3

    async def main() -> dict[str, Any]:
        log = EventLog(stream=stream)
        metrics = Metrics(service="backend", color=cfg.color, version=cfg.version)
        queue = AsyncJobQueue(JobQueue(cfg.db_path))
        real_finish = queue.sync.finish

        def finish(job_id: int, owner: str, result: Any) -> bool:
            nonlocal failures
            if failures:
                failures -= 1
                exc = sqlite3.OperationalError("database or disk is full")
                exc.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
                raise exc
            return real_finish(job_id, owner, result)

        queue.sync.finish = finish  # type: ignore[method-assign]
        job_id = await queue.submit("sleep", {"seconds": 0.1, "cpu": 0})
        runner = JobRunner(cfg, queue, metrics, log, "t")
        runner.start()
        for _ in range(100):
            job = await queue.get(job_id)
            assert job is not None
            if job.status == "done":
                break
            await asyncio.sleep(0.05)
        await runner.stop_claiming()
        await runner.close()
        await queue.close()
        return job.to_dict()

    job = asyncio.run(main())
    assert failures == 0
    assert job["status"] == "done" and job["runs"] == 1, job
    retries = [e for e in events(stream) if e.get("event") == "job_record_retry"]
    assert retries and retries[0]["reason"] == "storage_full"
