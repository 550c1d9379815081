"""Real processes: drain on SIGTERM, put-back, exactly-once across two instances, leases."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from apptest_support import AppProcess, http, poll
from archibald_app.queue import JobQueue

Spawn = Callable[..., AppProcess]


def running_ids(app: AppProcess) -> list[int]:
    _, _, page = app.get("/api/jobs?status=running&limit=500")
    return sorted(j["id"] for j in page["jobs"])


def test_sigterm_drains_running_jobs_and_leaves_queued_ones(spawn: Spawn, tmp_path: Path) -> None:
    app = spawn(APP_WORKERS="2", APP_DRAIN_TIMEOUT_S="15", APP_COLOR="blue", APP_VERSION="v1")
    app.wait_healthy()
    long_jobs = [app.submit("sleep", seconds=2.5) for _ in range(2)]
    waiting = [app.submit("sleep", seconds=2.5) for _ in range(3)]
    poll(lambda: running_ids(app) == long_jobs, 5, what="two jobs running")

    sent = time.monotonic()
    app.signal(signal.SIGTERM)
    status, headers, body = poll(
        lambda: (r := app.get("/health"))[0] == 503 and r, 3, what="/health 503"
    )
    assert body == {"status": "draining", "color": "blue", "version": "v1", "service": "backend"}
    assert headers["X-App-Color"] == "blue"
    status, headers, body = app.post("/api/jobs", {"kind": "sleep", "params": {"seconds": 1}})
    assert status == 503 and headers["Retry-After"] == "5"
    assert app.get(f"/api/jobs/{long_jobs[0]}")[2]["status"] == "running"

    assert app.wait_exit(timeout=15) == 0
    elapsed = time.monotonic() - sent
    assert elapsed < 15

    q = JobQueue(str(tmp_path / "jobs.sqlite3"))
    for job_id in long_jobs:
        job = q.get(job_id)
        assert job is not None
        assert (job.status, job.runs) == ("done", 1)
    for job_id in waiting:
        job = q.get(job_id)
        assert job is not None
        assert (job.status, job.runs, job.attempts) == ("queued", 0, 0)
    started = app.event("drain_started")
    finished = app.event("drain_finished")
    assert started is not None and started["running_jobs"] == 2
    assert finished is not None
    assert finished["reason"] == "idle"
    assert finished["jobs_completed"] == 2 and finished["jobs_requeued"] == 0
    assert 0 < finished["duration_s"] < 15
    assert app.event("jobs_requeued") is None


def test_drain_timeout_puts_unfinished_jobs_back(spawn: Spawn, tmp_path: Path) -> None:
    app = spawn(APP_DRAIN_TIMEOUT_S="1", APP_WORKERS="2")
    app.wait_healthy()
    job_id = app.submit("sleep", seconds=20)
    poll(lambda: running_ids(app) == [job_id], 5, what="job running")
    sent = time.monotonic()
    app.signal(signal.SIGTERM)
    assert app.wait_exit(timeout=10) == 0
    assert time.monotonic() - sent < 5
    job = JobQueue(str(tmp_path / "jobs.sqlite3")).get(job_id)
    assert job is not None
    assert (job.status, job.attempts, job.runs, job.owner) == ("queued", 0, 1, None)
    requeued = app.event("jobs_requeued")
    assert requeued is not None and requeued["job_ids"] == [job_id]
    finished = app.event("drain_finished")
    assert finished is not None and finished["reason"] == "timeout"
    assert finished["duration_s"] < 3


def test_second_sigterm_cuts_the_drain_short_and_loses_nothing(
    spawn: Spawn, tmp_path: Path
) -> None:
    app = spawn(APP_DRAIN_TIMEOUT_S="60")
    app.wait_healthy()
    job_id = app.submit("sleep", seconds=20)
    poll(lambda: running_ids(app) == [job_id], 5, what="job running")
    app.signal(signal.SIGTERM)
    poll(lambda: app.event("drain_started"), 5, what="drain_started")
    app.signal(signal.SIGTERM)
    assert app.wait_exit(timeout=10) == 0
    job = JobQueue(str(tmp_path / "jobs.sqlite3")).get(job_id)
    assert job is not None and job.status == "queued"
    finished = app.event("drain_finished")
    assert finished is not None and finished["reason"] == "second_signal"


def test_two_processes_run_500_jobs_exactly_once(spawn: Spawn, tmp_path: Path) -> None:
    env = {"APP_WORKERS": "4", "APP_POLL_INTERVAL_S": "0.05"}
    blue = spawn(APP_COLOR="blue", **env)
    green = spawn(APP_COLOR="green", **env)
    blue.wait_healthy()
    green.wait_healthy()

    def submit(n: int) -> int:
        app = blue if n % 2 else green
        return app.submit("sleep", seconds=0.01, cpu=0)

    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(submit, range(500)))
    assert len(set(ids)) == 500

    q = JobQueue(str(tmp_path / "jobs.sqlite3"))
    poll(lambda: q.count_by_status()["done"] == 500, 60, 0.2, what="500 jobs done")
    jobs, more = q.list(None, 500, None)
    assert (len(jobs), more) == (500, False)
    assert {j.id for j in jobs} == set(ids)
    assert all(j.runs == 1 and j.attempts == 1 for j in jobs)
    finishers = {j.finished_by for j in jobs}
    assert len(finishers) == 2, finishers
    assert {f.split("-")[1] for f in finishers if f} == {"blue", "green"}

    for app in (blue, green):
        app.signal(signal.SIGTERM)
    assert blue.wait_exit(timeout=10) == 0
    assert green.wait_exit(timeout=10) == 0


def test_job_of_a_killed_process_comes_back_after_its_lease(spawn: Spawn, tmp_path: Path) -> None:
    env = {"APP_LEASE_S": "1", "APP_POLL_INTERVAL_S": "0.05"}
    doomed = spawn(APP_COLOR="blue", **env)
    doomed.wait_healthy()
    job_id = doomed.submit("sleep", seconds=1)
    poll(lambda: running_ids(doomed) == [job_id], 5, what="job running")
    doomed.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert doomed.wait_exit(timeout=5) == -signal.SIGKILL

    heir = spawn(APP_COLOR="green", **env)
    heir.wait_healthy()
    done = poll(
        lambda: (j := heir.get(f"/api/jobs/{job_id}")[2])["status"] == "done" and j,
        10,
        what="job done by the second process",
    )
    assert time.monotonic() - killed_at >= 1.0  # not before the lease ran out
    assert done["runs"] == 2 and done["attempts"] == 2
    assert done["finished_by"].startswith("backend-green-")
    heir.signal(signal.SIGTERM)
    assert heir.wait_exit(timeout=10) == 0


def test_crash_fault_exits_1(spawn: Spawn) -> None:
    app = spawn(APP_FAULT_CRASH_AFTER_S="0.5")
    assert app.wait_exit(timeout=10) == 1
    assert app.event("fault_crash") is not None


def test_frontend_serves_page_and_relays_api(spawn: Spawn) -> None:
    backend = spawn(APP_COLOR="green", APP_VERSION="v3")
    backend.wait_healthy()
    front = spawn("frontend", APP_COLOR="green", APP_VERSION="v3", APP_BACKEND_URL=backend.base)
    front.wait_healthy()
    status, headers, page = front.get("/")
    assert status == 200 and "<title>Archibald jobs</title>" in page
    assert headers["X-App-Version"] == "v3"
    job = {"kind": "sleep", "params": {"seconds": 0}}
    key = {"Idempotency-Key": "relayed-key-0123456789"}
    status, _, body = http("POST", front.base + "/api/jobs", job, headers=key)
    assert status == 202
    status, headers, again = http("POST", front.base + "/api/jobs", job, headers=key)
    assert (status, again["id"], headers["Idempotent-Replayed"]) == (202, body["id"], "true")
    poll(lambda: backend.get(f"/api/jobs/{body['id']}")[2]["status"] == "done", 5, what="done")
    status, _, body = http("GET", front.base + "/metrics")
    assert 'service="frontend"' in body and 'route="/api/{tail}"' in body
    front.signal(signal.SIGTERM)
    backend.signal(signal.SIGTERM)
    assert front.wait_exit(timeout=10) == 0
    assert backend.wait_exit(timeout=10) == 0
    assert front.event("drain_finished") is not None
