"""roles/backup/files/backup.py's consistent copies: the database file itself and
never what a link in its place points to (the app writes the directory it lives
in), and never a file swapped in while the copy ran."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from backup_script import load_script

backup = load_script()


def database(path: Path, rows: int = 3) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY)")
    db.executemany("INSERT INTO jobs VALUES (?)", [(i,) for i in range(rows)])
    db.commit()
    db.close()
    return path


def identity(path: Path) -> tuple[int, int]:
    status = os.lstat(path)
    return status.st_dev, status.st_ino


def test_a_link_where_the_database_was_is_refused_and_nothing_is_copied(tmp_path: Path) -> None:
    secret = database(tmp_path / "another-service.db")
    data = tmp_path / "volume"
    data.mkdir()
    (data / "jobs.db").symlink_to(secret)
    staging = tmp_path / "staging"
    staging.mkdir()
    cfg = {"databases": [{"name": "app", "path": str(data / "jobs.db")}]}
    with pytest.raises(backup.BackupError, match="is a symbolic link, not the database"):
        backup.copy_databases(cfg, staging)
    assert list(staging.iterdir()) == [], "nothing entered the snapshot's staging"


def test_a_missing_database_is_skipped_and_a_directory_is_refused(tmp_path: Path) -> None:
    assert backup.regular_file(tmp_path / "none.db") is None
    with pytest.raises(backup.BackupError, match="not a regular file"):
        backup.regular_file(tmp_path)


def test_the_copy_is_of_the_file_checked_and_fails_when_it_was_swapped(tmp_path: Path) -> None:
    src = database(tmp_path / "jobs.db", rows=5)
    checked = identity(src)
    backup.sqlite_copy(str(src), str(tmp_path / "copy.db"), checked)
    assert backup.sqlite_info(str(tmp_path / "copy.db"))["rows"] == {"jobs": 5}

    # Replaced by another file after the check: the copy refuses it.
    other = database(tmp_path / "other.db", rows=1)
    os.replace(other, src)
    with pytest.raises(backup.BackupError, match="was replaced while the backup copied it"):
        backup.sqlite_copy(str(src), str(tmp_path / "copy2.db"), checked)
    # Replaced by a link: refused as a link.
    src.unlink()
    src.symlink_to(tmp_path / "copy.db")
    with pytest.raises(backup.BackupError, match="is a symbolic link"):
        backup.sqlite_copy(str(src), str(tmp_path / "copy3.db"), checked)
