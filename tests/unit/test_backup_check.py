"""roles/backup/files/backup.py `check`: restic check's outcome reaches the textfile
collector (the last success is kept through a failure), and a check never runs
beside a backup (the host's lock). restic is a stand-in script on PATH that
answers as restic does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from backup_script import SCRIPT, load_script

CHECK = "archibald_backup_check"


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A host's settings in tmp_path, and a stand-in restic that records its arguments
    and exits with the code in tmp_path/restic-rc (0 without it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    restic = bin_dir / "restic"
    restic.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {tmp_path}/restic-args\n'
        f"rc=$(cat {tmp_path}/restic-rc 2>/dev/null || echo 0)\n"
        'if [ "$rc" != 0 ]; then\n'
        '  echo "error: pack 3f2a1c: does not match its hash" >&2\n'
        '  echo "Fatal: repository contains errors" >&2\n'
        "fi\n"
        'exit "$rc"\n'
    )
    restic.chmod(0o755)
    settings = {
        "repository": "sftp:restic@storage:/srv/restic/h",
        "password_file": str(tmp_path / "password"),
        "sftp_command": "ssh -F /dev/null storage -s sftp",
        "cache_dir": str(tmp_path / "cache"),
        "check_textfile": str(tmp_path / "textfile" / "archibald_backup_check.prom"),
        "check_read_data_subset": "5%",
        "lock_file": str(tmp_path / "lock"),
    }
    (tmp_path / "backup.json").write_text(json.dumps(settings))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("BACKUP_CONFIG", str(tmp_path / "backup.json"))
    return tmp_path


def run_check(host: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "check"], capture_output=True, text=True, check=False
    )


def metrics(host: Path) -> dict[str, float]:
    text = (host / "textfile" / "archibald_backup_check.prom").read_text()
    return {
        name: float(value)
        for name, _, value in (line.partition(" ") for line in text.splitlines())
        if not name.startswith("#")
    }


def test_a_good_check_reads_its_share_and_says_so(host: Path) -> None:
    done = run_check(host)
    assert done.returncode == 0, done.stderr
    assert (host / "restic-args").read_text().split() == [
        "-o",
        "sftp.command=ssh",
        "-F",
        "/dev/null",
        "storage",
        "-s",
        "sftp",
        "check",
        "--read-data-subset=5%",
    ]
    seen = metrics(host)
    assert seen[f"{CHECK}_last_run_success"] == 1
    assert (
        seen[f"{CHECK}_last_success_timestamp_seconds"]
        == seen[f"{CHECK}_last_run_timestamp_seconds"]
    )


def test_a_failed_check_says_what_and_keeps_the_last_success(host: Path) -> None:
    assert run_check(host).returncode == 0
    good = metrics(host)[f"{CHECK}_last_success_timestamp_seconds"]
    (host / "restic-rc").write_text("1")
    time.sleep(0.01)
    failed = run_check(host)
    assert failed.returncode == 1
    assert "the repository check failed: restic check failed (exit 1): Fatal:" in failed.stderr
    assert "OPERATIONS.md 10.6" in failed.stderr
    seen = metrics(host)
    assert seen[f"{CHECK}_last_run_success"] == 0
    assert seen[f"{CHECK}_last_success_timestamp_seconds"] == good
    assert seen[f"{CHECK}_last_run_timestamp_seconds"] > good


def test_a_check_waits_for_a_backup_that_holds_the_lock(host: Path) -> None:
    script = load_script()
    cfg = json.loads((host / "backup.json").read_text())
    ended: list[float] = []
    with script.one_at_a_time(cfg, "backup"):
        waiting = threading.Thread(target=lambda: ended.append(run_check(host).returncode))
        waiting.start()
        time.sleep(1.0)
        assert not ended, "the check ran while the backup held the lock"
        released = time.monotonic()
    waiting.join(timeout=30)
    assert ended == [0]
    assert metrics(host)[f"{CHECK}_last_run_success"] == 1
    assert time.monotonic() - released < 30
