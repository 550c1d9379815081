"""Idempotent submission (issue 17): one job per Idempotency-Key, across processes,
for a documented time, on a database migrated in place."""

from __future__ import annotations

import signal
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from apptest_support import AppProcess, http, poll, run_backend
from archibald_app import idempotency, queue
from archibald_app.queue import IdempotencyKey, JobQueue
from archibald_app.service import ServiceState

KEY = "8e03978e-40d5-43e8-bc93-6894a57f9324"
JOB = {"kind": "sleep", "params": {"seconds": 1}}
JSON = {"Content-Type": "application/json"}


def keyed(key: str = KEY) -> dict[str, str]:
    return {**JSON, "Idempotency-Key": f'"{key}"'}


def job_count(state: ServiceState) -> int:
    return int(state.metrics.jobs.labels(kind="sleep", status="submitted")._value.get())


def outcomes(state: ServiceState) -> dict[str, int]:
    counter = state.metrics.idempotent_submissions
    return {
        o: int(counter.labels(outcome=o)._value.get()) for o in ("created", "replayed", "mismatch")
    }


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
    assert q._db.execute("PRAGMA user_version").fetchone()[0] == queue.SCHEMA_VERSION == 2
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
    assert len(q.list(None, 10, None)[0]) == len(before)


# --- the HTTP contract --------------------------------------------------------------------


def test_same_key_same_body_is_the_same_job(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        first = await client.post("/api/jobs", json=JOB, headers=keyed())
        assert first.status == 202
        assert idempotency.REPLAYED_HEADER not in first.headers
        body = await first.json()
        # The same request again, written differently: key order, 1.0, a default spelled out.
        same = b'{"params": {"cpu": 0.1, "seconds": 1.0}, "kind": "sleep"}'
        bare = {**JSON, "Idempotency-Key": KEY}  # the same key without the quotes
        for data, headers in [(None, keyed()), (same, keyed()), (same, bare)]:
            r = await client.post(
                "/api/jobs", json=JOB if data is None else None, data=data, headers=headers
            )
            assert r.status == 202
            assert await r.json() == body
            assert r.headers["Location"] == first.headers["Location"]
            assert r.headers[idempotency.REPLAYED_HEADER] == "true"
        assert len((await (await client.get("/api/jobs")).json())["jobs"]) == 1
        assert job_count(state) == 1
        assert outcomes(state) == {"created": 1, "replayed": 3, "mismatch": 0}
        text = await (await client.get("/metrics")).text()
        assert 'idempotent_submissions_total{outcome="replayed"} 3.0' in text

    run_backend(tmp_path, scenario)


def test_same_key_different_body_is_422(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        assert (await client.post("/api/jobs", json=JOB, headers=keyed())).status == 202
        other = {"kind": "sleep", "params": {"seconds": 2}}
        r = await client.post("/api/jobs", json=other, headers=keyed())
        assert r.status == 422
        answer = await r.json()
        assert answer["field"] == "Idempotency-Key" and "different" in answer["error"]
        assert len((await (await client.get("/api/jobs")).json())["jobs"]) == 1
        assert outcomes(state)["mismatch"] == 1

    run_backend(tmp_path, scenario)


@pytest.mark.parametrize(
    "value",
    [
        "",
        '""',
        "too-short-key",  # 13 characters, under 16
        "x" * 256,
        '"' + "x" * 256 + '"',
        "has a space in it, 1234",
        '"unterminated-0123456789',
        "0123456789abcdef, 0123456789abcdef",  # two keys folded into one field
        "schlüssel-0123456789",
        '"0123456789\\"abcdef"',
    ],
)
def test_malformed_key_is_400(tmp_path: Path, value: str) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        r = await client.post("/api/jobs", json=JOB, headers={"Idempotency-Key": value})
        assert r.status == 400, await r.text()
        assert (await r.json())["field"] == "Idempotency-Key"
        assert (await (await client.get("/api/jobs")).json())["jobs"] == []

    run_backend(tmp_path, scenario)


def test_two_key_fields_are_400(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        headers = [("Content-Type", "application/json")] + [("Idempotency-Key", KEY)] * 2
        r = await client.post("/api/jobs", data=b'{"kind": "fail"}', headers=headers)
        assert r.status == 400 and "once" in (await r.json())["error"]

    run_backend(tmp_path, scenario)


def test_only_an_accepted_submission_keeps_its_key(tmp_path: Path) -> None:
    """A request refused (422 here, 503 while draining) stores nothing: the client
    corrects it and retries with the same key."""

    async def scenario(client: TestClient, state: ServiceState) -> None:
        bad = {"kind": "sleep", "params": {"seconds": 999}}
        assert (await client.post("/api/jobs", json=bad, headers=keyed())).status == 422
        state.draining = True
        assert (await client.post("/api/jobs", json=JOB, headers=keyed())).status == 503
        state.draining = False
        r = await client.post("/api/jobs", json=JOB, headers=keyed())
        assert r.status == 202 and idempotency.REPLAYED_HEADER not in r.headers
        assert outcomes(state) == {"created": 1, "replayed": 0, "mismatch": 0}

    run_backend(tmp_path, scenario)


def test_keys_are_kept_for_the_configured_time(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServiceState) -> None:
        ids = []
        for _ in range(2):
            r = await client.post("/api/jobs", json=JOB, headers=keyed())
            assert r.status == 202 and idempotency.REPLAYED_HEADER not in r.headers
            ids.append((await r.json())["id"])
        assert ids[0] != ids[1]  # expired at once: the key was free again

    run_backend(tmp_path, scenario, idempotency_ttl_s=0.0)


# --- two real processes racing -------------------------------------------------------------


def test_two_processes_racing_one_key_create_one_job(
    spawn: Callable[..., AppProcess], tmp_path: Path
) -> None:
    """For each of 25 keys, four requests (two to each colour) are let go at once:
    exactly one creates the job, the other three answer it as a replay."""
    env = {"APP_WORKERS": "2", "APP_POLL_INTERVAL_S": "0.05"}
    blue, green = spawn(APP_COLOR="blue", **env), spawn(APP_COLOR="green", **env)
    blue.wait_healthy()
    green.wait_healthy()
    keys = [f"race-{n:04d}-0123456789abcdef" for n in range(25)]
    body = b'{"kind": "sleep", "params": {"seconds": 0, "cpu": 0}}'

    def race(key: str) -> list[tuple[int, dict[str, str], Any]]:
        start = threading.Barrier(4)

        def post(app: AppProcess) -> tuple[int, dict[str, str], Any]:
            start.wait(timeout=10)
            # A generous timeout: the race is the point, not the speed of a busy machine.
            return http(
                "POST",
                app.base + "/api/jobs",
                raw=body,
                headers={"Idempotency-Key": key},
                timeout=30,
            )

        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(post, [blue, green, blue, green]))

    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = dict(zip(keys, pool.map(race, keys), strict=True))

    job_ids = set()
    for key, four in answers.items():
        assert [status for status, _, _ in four] == [202] * 4, (key, four)
        ids = {answer["id"] for _, _, answer in four}
        assert len(ids) == 1, (key, four)
        replays = [h.get(idempotency.REPLAYED_HEADER) for _, h, _ in four]
        assert sorted(replays, key=str) == [None, "true", "true", "true"], (key, replays)
        job_ids |= ids
    assert len(job_ids) == len(keys)

    q = JobQueue(str(tmp_path / "jobs.sqlite3"))
    stored = q._db.execute("SELECT idempotency_key, COUNT(*) FROM jobs GROUP BY 1").fetchall()
    assert sorted(stored) == [(key, 1) for key in sorted(keys)]
    poll(lambda: q.count_by_status()["done"] == len(keys), 30, 0.1, what="every job done")
    jobs, _ = q.list(None, 100, None)
    assert all(j.runs == 1 for j in jobs)
    for app in (blue, green):
        app.signal(signal.SIGTERM)
        assert app.wait_exit(timeout=10) == 0
