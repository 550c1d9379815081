"""The SQLite queue: atomic claims, attempts, put-back, leases, exactly-once records."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from archibald_app.queue import IdempotencyKey, JobQueue, QueueFull, Submitted


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.sqlite3")


def test_submit_claim_finish(db: str) -> None:
    q = JobQueue(db)
    job_id = q.submit("sleep", {"seconds": 1})
    job = q.claim("a", lease_s=30, max_attempts=3)
    assert job is not None and job.id == job_id
    assert (job.status, job.attempts, job.runs, job.owner) == ("running", 1, 1, "a")
    assert q.claim("b", lease_s=30, max_attempts=3) is None
    assert q.finish(job_id, "a", {"ok": True})
    done = q.get(job_id)
    assert done is not None
    assert (done.status, done.finished_by, done.result, done.owner) == (
        "done",
        "a",
        {"ok": True},
        None,
    )


def test_wal_mode(db: str) -> None:
    q = JobQueue(db)
    assert q._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_failures_retry_until_max_attempts(db: str) -> None:
    q = JobQueue(db)
    job_id = q.submit("fail", {})
    statuses = []
    for _ in range(3):
        job = q.claim("a", lease_s=30, max_attempts=3)
        assert job is not None
        statuses.append(q.fail(job.id, "a", "boom", max_attempts=3))
    assert statuses == ["queued", "queued", "failed"]
    final = q.get(job_id)
    assert final is not None
    assert (final.status, final.attempts, final.runs, final.error) == ("failed", 3, 3, "boom")
    assert q.claim("a", lease_s=30, max_attempts=3) is None


def test_requeue_puts_back_without_spending_an_attempt(db: str) -> None:
    q = JobQueue(db)
    ids = [q.submit("sleep", {"seconds": 1}) for _ in range(3)]
    q.claim("a", 30, 3)
    q.claim("a", 30, 3)
    q.claim("b", 30, 3)
    assert q.requeue_owned("a") == ids[:2]
    job = q.get(ids[0])
    assert job is not None
    assert (job.status, job.attempts, job.runs, job.owner) == ("queued", 0, 1, None)
    assert q.count_by_status() == {"queued": 2, "running": 1, "done": 0, "failed": 0}


def test_expired_lease_comes_back_and_old_owner_cannot_finish(db: str) -> None:
    q = JobQueue(db)
    job_id = q.submit("sleep", {"seconds": 1})
    assert q.claim("dead", lease_s=0.05, max_attempts=3) is not None
    assert q.claim("b", lease_s=30, max_attempts=3) is None
    time.sleep(0.1)  # the lease is 50 ms: let it pass
    job = q.claim("b", lease_s=30, max_attempts=3)
    assert job is not None and job.id == job_id
    assert (job.owner, job.attempts, job.runs) == ("b", 2, 2)
    assert not q.finish(job_id, "dead", None)
    assert q.finish(job_id, "b", None)


def test_expired_lease_on_last_attempt_fails_the_job(db: str) -> None:
    q = JobQueue(db)
    job_id = q.submit("sleep", {"seconds": 1})
    assert q.claim("dead", lease_s=0.01, max_attempts=1) is not None
    time.sleep(0.05)
    assert q.claim("b", lease_s=30, max_attempts=1) is None
    job = q.get(job_id)
    assert job is not None
    assert job.status == "failed"
    assert job.error == "lease expired after 1 attempts"


def test_renew_leases_keeps_jobs(db: str) -> None:
    q = JobQueue(db)
    q.submit("sleep", {"seconds": 1})
    assert q.claim("a", lease_s=0.2, max_attempts=3) is not None
    assert q.renew_leases("a", lease_s=30) == 1
    time.sleep(0.3)
    assert q.claim("b", lease_s=30, max_attempts=3) is None


def test_a_full_queue_refuses_new_jobs_and_answers_replays(db: str) -> None:
    """max_queued jobs waiting: a new one is refused (QueueFull) and nothing is
    stored; a replay of a stored key is answered; a claimed job makes room."""
    q = JobQueue(db, max_queued=2)
    key = IdempotencyKey("k-1", "fp", 60)
    first = q.submit_once("sleep", {"seconds": 1}, key)
    q.submit("sleep", {"seconds": 1})
    with pytest.raises(QueueFull, match="2 jobs are queued already"):
        q.submit("sleep", {"seconds": 1})
    with pytest.raises(QueueFull):
        q.submit_once("sleep", {"seconds": 1}, IdempotencyKey("k-2", "fp", 60))
    assert q.submit_once("sleep", {"seconds": 1}, key) == Submitted(first.job_id, "replayed")
    assert q.count_by_status()["queued"] == 2
    assert q.claim("a", lease_s=30, max_attempts=3) is not None  # running: not waiting
    q.submit("sleep", {"seconds": 1})
    assert q.count_by_status() == {**q.count_by_status(), "queued": 2, "running": 1}
    assert JobQueue(db).submit("sleep", {}) > 0, "0 is no bound"


def test_list_pages_newest_first(db: str) -> None:
    q = JobQueue(db)
    ids = [q.submit("sleep", {"seconds": 0}) for _ in range(5)]
    page, more = q.list(None, limit=2, before=ids[4])
    assert ([j.id for j in page], more) == ([ids[3], ids[2]], True)
    page, more = q.list(None, limit=2, before=ids[1])
    assert ([j.id for j in page], more) == ([ids[0]], False)
    page, more = q.list(None, limit=5, before=None)
    assert (len(page), more) == (5, False)
    assert q.list("done", 10, None) == ([], False)


def test_a_page_is_one_index_range_whatever_its_depth(db: str) -> None:
    """Keyset paging: SQLite's plan for a deep page searches an index (no scan, no
    temporary sort), and no page counts the table."""
    q = JobQueue(db)
    queries: list[str] = []
    q._db.set_trace_callback(queries.append)
    q.list("queued", 50, 10**12)
    q.list(None, 50, 10**12)
    q._db.set_trace_callback(None)
    assert len(queries) == 2 and not any("COUNT" in sql.upper() for sql in queries), queries
    for sql in queries:
        plan = " ".join(str(row[-1]) for row in q._db.execute("EXPLAIN QUERY PLAN " + sql))
        assert "SEARCH" in plan and "TEMP B-TREE" not in plan, (sql, plan)


def test_concurrent_claims_never_share_a_job(db: str) -> None:
    JobQueue(db).submit("sleep", {})
    setup = JobQueue(db)
    for _ in range(199):
        setup.submit("sleep", {})
    claimed: dict[str, list[int]] = {}

    def claimer(name: str) -> None:
        q = JobQueue(db)
        mine = claimed.setdefault(name, [])
        while (job := q.claim(name, 30, 3)) is not None:
            mine.append(job.id)
        q.close()

    threads = [threading.Thread(target=claimer, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    all_ids = [i for ids in claimed.values() for i in ids]
    assert sorted(all_ids) == list(range(1, 201))


def _open_queue(path: str, start: Any, out: Any) -> None:
    start.wait()
    try:
        JobQueue(path).close()
        out.put("ok")
    except Exception as exc:
        out.put(repr(exc))


def test_both_colours_can_open_a_new_database_at_the_same_moment(tmp_path: Path) -> None:
    """SQLite refuses the switch to WAL at once, busy handler or not, while another
    process sets it up: 30 rounds of four processes opening one new file together."""
    context = multiprocessing.get_context("fork")
    failures = []
    for round_ in range(30):
        path = str(tmp_path / f"jobs-{round_}.sqlite3")
        start, out = context.Event(), context.Queue()
        procs = [context.Process(target=_open_queue, args=(path, start, out)) for _ in range(4)]
        for proc in procs:
            proc.start()
        start.set()
        failures += [r for r in (out.get(timeout=30) for _ in procs) if r != "ok"]
        for proc in procs:
            proc.join(timeout=30)
    assert failures == []
