"""Idempotent submission (issue 17): one job per Idempotency-Key, across processes,
for a documented time, on a database migrated in place."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from archibald_app import queue
from archibald_app.queue import IdempotencyKey, JobQueue

KEY = "8e03978e-40d5-43e8-bc93-6894a57f9324"


# --- the queue ------------------------------------------------------------------------


def test_a_key_names_one_job(tmp_path: Path) -> None:
    q = JobQueue(str(tmp_path / "j.db"))
    key = IdempotencyKey(KEY, "f1", 3600)
    first = q.submit_once("sleep", {"seconds": 1}, key)
    again = q.submit_once("sleep", {"seconds": 1}, key)
    other = q.submit_once("sleep", {"seconds": 2}, IdempotencyKey(KEY, "f2", 3600))
    assert (first.outcome, again.outcome, other.outcome) == ("created", "replayed", "mismatch")
    assert first.job_id == again.job_id == other.job_id
    assert q.submit("sleep", {"seconds": 1}) != first.job_id  # no key: always a new job
    assert q.count_by_status()["queued"] == 2


def test_the_database_refuses_a_second_row_with_a_key(tmp_path: Path) -> None:
    """The UNIQUE index, not only the look-up, keeps a key to one job."""
    q = JobQueue(str(tmp_path / "j.db"))
    q.submit_once("sleep", {}, IdempotencyKey(KEY, "f", 3600))
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        q._db.execute(
            "INSERT INTO jobs (kind, params, created_at, idempotency_key) VALUES ('x', '{}', 0, ?)",
            (KEY,),
        )


def test_expired_keys_are_purged_and_free_again(tmp_path: Path) -> None:
    q = JobQueue(str(tmp_path / "j.db"))
    expired = q.submit_once("sleep", {}, IdempotencyKey("expires-at-once-0001", "f", 0))
    kept = q.submit_once("sleep", {}, IdempotencyKey("kept-for-an-hour-01", "f", 3600))
    again = q.submit_once("sleep", {}, IdempotencyKey("expires-at-once-0001", "f", 3600))
    assert again.outcome == "created" and again.job_id != expired.job_id
    rows = dict(q._db.execute("SELECT id, idempotency_key FROM jobs").fetchall())
    assert rows == {
        expired.job_id: None,  # the job stays, its key is gone
        kept.job_id: "kept-for-an-hour-01",
        again.job_id: "expires-at-once-0001",
    }


# --- the migration of an existing database ----------------------------------------------


def make_version_0_database(path: Path) -> list[tuple[Any, ...]]:
    """A database as every release before issue 17 left it: `queue._SCHEMA` is that
    schema (version 0) and never changes; jobs in every state. Returns its rows."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(queue._SCHEMA)
    db.executemany(
        "INSERT INTO jobs (kind, params, status, attempts, runs, owner, lease_until,"
        " created_at, started_at, finished_at, finished_by, result, error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                "sleep",
                '{"seconds":1.0,"cpu":0.1}',
                "queued",
                0,
                0,
                None,
                None,
                1.0,
                None,
                None,
                None,
                None,
                None,
            ),
            (
                "sleep",
                '{"seconds":2.0,"cpu":0.1}',
                "running",
                1,
                1,
                "backend-blue-h-1-ab",
                9e9,
                2.0,
                2.5,
                None,
                None,
                None,
                None,
            ),
            (
                "sleep",
                '{"seconds":0.0,"cpu":0.1}',
                "done",
                1,
                1,
                None,
                None,
                3.0,
                3.1,
                3.2,
                "backend-green-h-2-cd",
                '{"slept_s":0.0}',
                None,
            ),
            (
                "fail",
                '{"seconds":0.0,"message":"x"}',
                "failed",
                3,
                3,
                None,
                None,
                4.0,
                4.1,
                4.2,
                "backend-blue-h-1-ab",
                None,
                "x",
            ),
        ],
    )
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    rows = db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
    db.close()
    return rows


def test_an_existing_database_is_migrated_in_place_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    before = make_version_0_database(path)

    q = JobQueue(str(path))
    assert q.migrated_from == 0
    assert q._db.execute("PRAGMA user_version").fetchone()[0] == queue.SCHEMA_VERSION == 1
    width = len(before[0])
    after = q._db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
    assert [row[:width] for row in after] == before  # every job, every field, unchanged
    assert all(row[width:] == (None, None, None) for row in after)
    claimed = q.claim("new", lease_s=30, max_attempts=3)
    assert claimed is not None and claimed.id == 1  # the old queued job runs
    created = q.submit_once("sleep", {"seconds": 1}, IdempotencyKey(KEY, "f", 3600))
    assert created == queue.Submitted(5, "created")
    q.close()

    reopened = JobQueue(str(path))
    assert reopened.migrated_from is None  # once is enough
    # An older release (rollback) still writes and reads the migrated table.
    reopened._db.execute(
        "INSERT INTO jobs (kind, params, created_at) VALUES ('sleep', '{\"seconds\":1}', 6.0)"
    )
    old_style = reopened.get(6)
    assert old_style is not None and old_style.status == "queued"


def test_two_processes_opening_an_old_database_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    before = make_version_0_database(path)
    start = threading.Barrier(4)

    def open_queue(_: int) -> int | None:
        start.wait(timeout=10)
        q = JobQueue(str(path))
        q.close()
        return q.migrated_from

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(open_queue, range(4)))
    assert sorted(results, key=str) == [0, None, None, None]
    q = JobQueue(str(path))
    assert len(q.list(None, 10, 0)[0]) == len(before)
