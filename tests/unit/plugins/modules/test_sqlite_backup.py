"""sqlite_backup copies a live WAL database consistently and refuses what it cannot copy."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_backup


def make_db(path: Path, rows: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, kind TEXT)")
    conn.executemany("INSERT INTO jobs (kind) VALUES (?)", [("sleep",)] * rows)
    conn.commit()
    return conn


def test_a_copy_holds_every_row_even_those_still_in_the_write_ahead_log(tmp_path: Path) -> None:
    src = tmp_path / "jobs.sqlite3"
    writer = make_db(src, 25)  # still open: the rows are in jobs.sqlite3-wal
    assert (tmp_path / "jobs.sqlite3-wal").stat().st_size > 0
    tmp = tmp_path / "copy.sqlite3"
    sqlite_backup.backup(str(src), str(tmp))
    assert sqlite_backup.count_rows(str(tmp), "jobs") == 25
    assert sqlite_backup.count_rows(str(src), "jobs") == 25
    assert not (tmp_path / "copy.sqlite3-wal").exists()
    writer.close()


@pytest.mark.parametrize(
    ("table", "match"),
    [("jobs; DROP TABLE jobs", "not a plain table name"), ("missing", "cannot count the rows")],
)
def test_bad_count_tables_are_refused(tmp_path: Path, table: str, match: str) -> None:
    src = tmp_path / "jobs.sqlite3"
    make_db(src, 1).close()
    with pytest.raises(sqlite_backup.BackupError, match=match):
        sqlite_backup.count_rows(str(src), table)


def test_a_missing_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(sqlite_backup.BackupError, match="does not exist"):
        sqlite_backup.backup(str(tmp_path / "nope.sqlite3"), str(tmp_path / "copy.sqlite3"))


def test_no_table_counts_nothing(tmp_path: Path) -> None:
    assert sqlite_backup.count_rows(str(tmp_path / "any"), "") is None
