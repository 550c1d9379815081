"""The job queue: one SQLite table in WAL mode, shared by every process and colour.

Each write is one `BEGIN IMMEDIATE` transaction, so claims are atomic across
processes: a job is claimed by a single `UPDATE ... WHERE id = (SELECT ...)
RETURNING`, and its `owner` and `lease_until` say who holds it until when.
A holder renews its leases while it works; a job whose holder died comes back
when the lease expires. `runs` counts every start and `finished_by` names the
instance that finished the job, so tests can prove "exactly once".

A submission may carry a client's Idempotency-Key: the key, the fingerprint
of its request and the key's expiry are stored on the job's row, under a
UNIQUE index, and the look-up and the insert are one transaction, so a key
names one job across every process and colour. Expired keys are cleared
(the job stays) by the next keyed submission.

The schema is versioned with `PRAGMA user_version` and brought up to date when
the queue opens, in one transaction (the other colour waits, then finds it
done). Migrations only add nullable columns and indexes, so an older release
keeps working on a newer schema: a rollback needs no down-migration.

`JobQueue` is synchronous (one connection, used from one thread at a time);
`AsyncJobQueue` runs it on a single dedicated thread for the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

STATUSES = ("queued", "running", "done", "failed")
WAL_LIMIT_BYTES = 4 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT    NOT NULL,
    params      TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'queued',
    attempts    INTEGER NOT NULL DEFAULT 0,
    runs        INTEGER NOT NULL DEFAULT 0,
    owner       TEXT,
    lease_until REAL,
    created_at  REAL    NOT NULL,
    started_at  REAL,
    finished_at REAL,
    finished_by TEXT,
    result      TEXT,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status_id ON jobs (status, id);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner) WHERE owner IS NOT NULL;
"""

# Migration N brings user_version N-1 to N. Add only: nullable columns, indexes.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: the Idempotency-Key of a submission (issue 17)
        "ALTER TABLE jobs ADD COLUMN idempotency_key TEXT",
        "ALTER TABLE jobs ADD COLUMN idempotency_hash TEXT",
        "ALTER TABLE jobs ADD COLUMN idempotency_expires_at REAL",
        "CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)"
        " WHERE idempotency_key IS NOT NULL",
        "CREATE INDEX jobs_idempotency_expiry ON jobs (idempotency_expires_at)"
        " WHERE idempotency_key IS NOT NULL",
    ),
    (  # 2: finished jobs found by age, for retention (issue 18)
        "CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_COLUMNS = (
    "id, kind, params, status, attempts, runs, owner, lease_until, created_at,"
    " started_at, finished_at, finished_by, result, error"
)


@dataclass(frozen=True)
class Job:
    """One row of the jobs table."""

    id: int
    kind: str
    params: dict[str, Any]
    status: str
    attempts: int
    runs: int
    owner: str | None
    lease_until: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    finished_by: str | None
    result: Any
    error: str | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Job:
        return cls(
            id=row[0],
            kind=row[1],
            params=json.loads(row[2]),
            status=row[3],
            attempts=row[4],
            runs=row[5],
            owner=row[6],
            lease_until=row[7],
            created_at=row[8],
            started_at=row[9],
            finished_at=row[10],
            finished_by=row[11],
            result=json.loads(row[12]) if row[12] is not None else None,
            error=row[13],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "params": self.params,
            "status": self.status,
            "attempts": self.attempts,
            "runs": self.runs,
            "owner": self.owner,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "finished_by": self.finished_by,
            "result": self.result,
            "error": self.error,
        }


@dataclass(frozen=True)
class IdempotencyKey:
    """A client's Idempotency-Key, the fingerprint of its request, how long to keep it."""

    value: str
    fingerprint: str
    ttl_s: float


@dataclass(frozen=True)
class Submitted:
    """What a keyed submission did: `created` the job, `replayed` the job an
    earlier request with the same key and fingerprint created, or found the key
    taken by a `mismatch`ing request (job_id is then that request's job)."""

    job_id: int
    outcome: str


@dataclass(frozen=True)
class Storage:
    """How much room the job database takes, and what is left on its filesystem."""

    db_bytes: int  # the database file plus its write-ahead log
    fs_avail_bytes: int  # free for this user on the database's filesystem
    fs_size_bytes: int


class StorageFull(Exception):
    """The job database could not be written: its disk (or its size limit) is full."""


class QueueFull(Exception):
    """The queue holds max_queued jobs waiting already: this one was not stored."""

    def __init__(self, max_queued: int) -> None:
        super().__init__(f"{max_queued} jobs are queued already, the most the queue holds")
        self.max_queued = max_queued


def is_storage_full(exc: BaseException) -> bool:
    """True for SQLite's SQLITE_FULL ("database or disk is full")."""
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        or "database or disk is full" in str(exc)
    )


class JobQueue:
    """Synchronous access to the jobs table through one connection."""

    def __init__(
        self,
        path: str,
        *,
        on_query: Callable[[str], None] | None = None,
        busy_timeout_s: float = 15.0,
        max_queued: int = 0,
    ) -> None:
        self.path = path
        # The most jobs waiting to run (0: no bound): a submission past it is
        # refused with QueueFull, inside the transaction that would insert it.
        self.max_queued = max_queued
        self._on_query = on_query
        self._db = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        self._set_wal(busy_timeout_s)
        self._db.execute("PRAGMA synchronous = NORMAL")
        # A checkpoint truncates the write-ahead log back to this size.
        self._db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        self._count("schema")
        self._db.executescript(_SCHEMA)
        self.migrated_from = self._migrate()

    def close(self) -> None:
        self._db.close()

    def _set_wal(self, timeout_s: float) -> None:
        """Switch to WAL, waiting for a colour that opens the same new file at once.

        SQLite answers "database is locked" at once, without its busy handler,
        while another connection sets up the WAL index: wait and ask again, up to
        the busy timeout.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    # --- plumbing -----------------------------------------------------------------

    def _count(self, operation: str) -> None:
        if self._on_query is not None:
            self._on_query(operation)

    def _write(self, operation: str) -> _WriteTxn:
        self._count(operation)
        return _WriteTxn(self._db)

    def _migrate(self) -> int | None:
        """Bring the schema to SCHEMA_VERSION; return the version it had, if it changed."""
        with self._write("schema"):
            version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
            if version >= SCHEMA_VERSION:  # up to date, or newer: compatible by design
                return None
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return version

    # --- writes -------------------------------------------------------------------

    def submit(self, kind: str, params: dict[str, Any]) -> int:
        """Queue a job; return its id. Raises StorageFull when the disk is full,
        QueueFull when max_queued jobs wait already."""
        with _storage_full_is_raised(), self._write("insert"):
            return self._insert(kind, params, None, time.time())

    def submit_once(self, kind: str, params: dict[str, Any], key: IdempotencyKey) -> Submitted:
        """Queue a job under a client's Idempotency-Key, unless the key already names one.

        One transaction: clear expired keys, look the key up, insert if it is
        free. Raises StorageFull when the disk is full, QueueFull when a new job
        would pass max_queued (a replay is answered all the same).
        """
        now = time.time()
        with _storage_full_is_raised(), self._write("insert"):
            self._db.execute(
                "UPDATE jobs SET idempotency_key = NULL, idempotency_hash = NULL,"
                " idempotency_expires_at = NULL"
                " WHERE idempotency_key IS NOT NULL AND idempotency_expires_at <= ?",
                (now,),
            )
            row = self._db.execute(
                "SELECT id, idempotency_hash FROM jobs WHERE idempotency_key = ?", (key.value,)
            ).fetchone()
            if row is not None:
                outcome = "replayed" if row[1] == key.fingerprint else "mismatch"
                return Submitted(int(row[0]), outcome)
            return Submitted(self._insert(kind, params, key, now), "created")

    def _insert(
        self, kind: str, params: dict[str, Any], key: IdempotencyKey | None, now: float
    ) -> int:
        # The index on status bounds this to max_queued rows, the check and the
        # insert are one transaction (BEGIN IMMEDIATE): no two submissions pass it
        # together.
        if (
            self.max_queued
            and self._db.execute(
                "SELECT 1 FROM jobs WHERE status = 'queued' LIMIT 1 OFFSET ?",
                (self.max_queued - 1,),
            ).fetchone()
        ):
            raise QueueFull(self.max_queued)
        row = self._db.execute(
            "INSERT INTO jobs (kind, params, created_at, idempotency_key, idempotency_hash,"
            " idempotency_expires_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (
                kind,
                json.dumps(params, separators=(",", ":")),
                now,
                key.value if key else None,
                key.fingerprint if key else None,
                now + key.ttl_s if key else None,
            ),
        ).fetchone()
        return int(row[0])

    def claim(self, owner: str, lease_s: float, max_attempts: int) -> Job | None:
        """Atomically take the oldest claimable job for `owner`, or return None.

        Claimable: queued, or running under a lease that has expired (its holder
        died). An expired job that has used all its attempts is marked failed.
        """
        now = time.time()
        with self._write("claim"):
            self._db.execute(
                "UPDATE jobs SET status = 'failed', owner = NULL, lease_until = NULL,"
                " finished_at = ?, error = 'lease expired after ' || attempts || ' attempts'"
                " WHERE status = 'running' AND lease_until < ? AND attempts >= ?",
                (now, now, max_attempts),
            )
            row = self._db.execute(
                "UPDATE jobs SET status = 'running', owner = ?, lease_until = ?,"
                " attempts = attempts + 1, runs = runs + 1, started_at = ?"
                " WHERE id = (SELECT id FROM jobs WHERE status = 'queued'"
                "   OR (status = 'running' AND lease_until < ?) ORDER BY id LIMIT 1)"
                f" RETURNING {_COLUMNS}",
                (owner, now + lease_s, now, now),
            ).fetchone()
        return Job.from_row(row) if row is not None else None

    def finish(self, job_id: int, owner: str, result: Any) -> bool:
        """Mark a job done; False if `owner` no longer holds it (lease lost)."""
        with self._write("finish"):
            cur = self._db.execute(
                "UPDATE jobs SET status = 'done', owner = NULL, lease_until = NULL,"
                " finished_at = ?, finished_by = ?, result = ?, error = NULL"
                " WHERE id = ? AND owner = ? AND status = 'running'",
                (time.time(), owner, json.dumps(result), job_id, owner),
            )
        return cur.rowcount == 1

    def fail(self, job_id: int, owner: str, error: str, max_attempts: int) -> str | None:
        """Record a failed run: back to queued while attempts remain, else failed.

        Returns the new status, or None if `owner` no longer holds the job.
        """
        with self._write("fail"):
            row = self._db.execute(
                "UPDATE jobs SET"
                " status = CASE WHEN attempts >= ? THEN 'failed' ELSE 'queued' END,"
                " finished_at = CASE WHEN attempts >= ? THEN ? ELSE NULL END,"
                " finished_by = CASE WHEN attempts >= ? THEN ? ELSE NULL END,"
                " owner = NULL, lease_until = NULL, error = ?"
                " WHERE id = ? AND owner = ? AND status = 'running' RETURNING status",
                (
                    max_attempts,
                    max_attempts,
                    time.time(),
                    max_attempts,
                    owner,
                    error[:500],
                    job_id,
                    owner,
                ),
            ).fetchone()
        return str(row[0]) if row is not None else None

    def renew_leases(self, owner: str, lease_s: float) -> int:
        """Extend the lease of every job `owner` is running; return how many."""
        with self._write("renew"):
            cur = self._db.execute(
                "UPDATE jobs SET lease_until = ? WHERE owner = ? AND status = 'running'",
                (time.time() + lease_s, owner),
            )
        return cur.rowcount

    def requeue_owned(self, owner: str) -> list[int]:
        """Put back every job `owner` holds (a shutdown that could not finish them).

        The interrupted run does not count against the job's attempts.
        """
        with self._write("requeue"):
            rows = self._db.execute(
                "UPDATE jobs SET status = 'queued', owner = NULL, lease_until = NULL,"
                " attempts = MAX(attempts - 1, 0), error = 'interrupted by shutdown'"
                " WHERE owner = ? AND status = 'running' RETURNING id",
                (owner,),
            ).fetchall()
        return sorted(int(r[0]) for r in rows)

    def purge_finished(self, older_than: float, batch: int = 1000) -> int:
        """Delete up to `batch` done or failed jobs that finished before `older_than`.

        One short write transaction; a job's Idempotency-Key goes with it (keys
        live shorter than the retention, see config). Freed pages are reused
        by later jobs, so the file stops growing rather than shrinking.
        """
        with _storage_full_is_raised(), self._write("purge"):
            cur = self._db.execute(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs"
                " WHERE finished_at IS NOT NULL AND finished_at < ?"
                " AND status IN ('done', 'failed') LIMIT ?)",
                (older_than, batch),
            )
        return cur.rowcount

    # --- reads --------------------------------------------------------------------

    def storage(self) -> Storage:
        """Sizes of the database (file and write-ahead log) and of its filesystem."""
        size = 0
        for path in (self.path, self.path + "-wal"):
            with contextlib.suppress(FileNotFoundError):
                size += os.stat(path).st_size
        fs = os.statvfs(os.path.dirname(os.path.abspath(self.path)))
        return Storage(size, fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize)

    def get(self, job_id: int) -> Job | None:
        self._count("get")
        row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row is not None else None

    def list(self, status: str | None, limit: int, before: int | None) -> tuple[list[Job], bool]:
        """A page of jobs, newest first: the `limit` newest with an id below `before`
        (all, without it), and whether older ones follow. Keyset, not OFFSET: one
        index range (the primary key, or (status, id)) whatever page is asked, and no
        COUNT over the table."""
        self._count("list")
        where: list[tuple[str, str | int]] = [("status = ?", status)] if status else []
        where += [("id < ?", before)] if before is not None else []
        clause = ("WHERE " + " AND ".join(w for w, _ in where)) if where else ""
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY id DESC LIMIT ?",
            (*(arg for _, arg in where), limit + 1),
        ).fetchall()
        return [Job.from_row(r) for r in rows[:limit]], len(rows) > limit

    def count_by_status(self) -> dict[str, int]:
        self._count("count")
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
            counts[status] = int(n)
        return counts


@contextlib.contextmanager
def _storage_full_is_raised() -> Iterator[None]:
    """Turn SQLite's SQLITE_FULL into StorageFull; other errors pass unchanged."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        if is_storage_full(exc):
            raise StorageFull(str(exc)) from exc
        raise


class _WriteTxn:
    """`BEGIN IMMEDIATE` ... `COMMIT` (or `ROLLBACK` on error) around a block."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            self._db.execute("ROLLBACK")


class AsyncJobQueue:
    """Runs a JobQueue on one dedicated thread so the event loop never blocks on SQLite."""

    def __init__(self, queue: JobQueue) -> None:
        self.sync = queue
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

    async def _call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def submit(self, kind: str, params: dict[str, Any]) -> int:
        return await self._call(self.sync.submit, kind, params)

    async def submit_once(
        self, kind: str, params: dict[str, Any], key: IdempotencyKey
    ) -> Submitted:
        return await self._call(self.sync.submit_once, kind, params, key)

    async def claim(self, owner: str, lease_s: float, max_attempts: int) -> Job | None:
        return await self._call(self.sync.claim, owner, lease_s, max_attempts)

    async def finish(self, job_id: int, owner: str, result: Any) -> bool:
        return await self._call(self.sync.finish, job_id, owner, result)

    async def fail(self, job_id: int, owner: str, error: str, max_attempts: int) -> str | None:
        return await self._call(self.sync.fail, job_id, owner, error, max_attempts)

    async def renew_leases(self, owner: str, lease_s: float) -> int:
        return await self._call(self.sync.renew_leases, owner, lease_s)

    async def requeue_owned(self, owner: str) -> list[int]:
        return await self._call(self.sync.requeue_owned, owner)

    async def get(self, job_id: int) -> Job | None:
        return await self._call(self.sync.get, job_id)

    async def list(
        self, status: str | None, limit: int, before: int | None
    ) -> tuple[list[Job], bool]:
        return await self._call(self.sync.list, status, limit, before)

    async def count_by_status(self) -> dict[str, int]:
        return await self._call(self.sync.count_by_status)

    async def purge_finished(self, older_than: float, batch: int = 1000) -> int:
        return await self._call(self.sync.purge_finished, older_than, batch)

    async def storage(self) -> Storage:
        return await self._call(self.sync.storage)

    async def close(self) -> None:
        await self._call(self.sync.close)
        self._executor.shutdown(wait=True)
