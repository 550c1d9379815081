#!/usr/bin/python3
"""Back up this host to its restic repository, or run restic with its settings.

Installed by the archibald-ops `backup` role; its settings are one JSON file
(rendered from the role's variables). Subcommands:

  backup            consistent SQLite copies (SQLite's online backup API, the
                    one sqlite3's `.backup` uses, run as the database file's
                    owner), then `restic backup` of them and the listed paths,
                    `restic forget` by the retention policy (and prune), and
                    the node exporter textfile with the figures
  check             `restic check`, reading a share of the data as well
                    (check_read_data_subset), and the node exporter textfile
                    with its outcome; the BackupCheckFailed alert reads it
  restic ARGS...    restic with this host's repository, password and SSH
                    settings, e.g. `snapshots`, `stats`, `check`
  sqlite-info PATH  integrity check and row count per table of a database (JSON)

backup and check wait for each other (a lock file, lock_file): restic's own
lock would make the second of them fail instead.

Exit codes: 0 done, 1 failed (what failed is the last line on stderr).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CONFIG = Path(os.environ.get("BACKUP_CONFIG", "/etc/archibald-backup/backup.json"))
CHECK = "archibald_backup_check"


class BackupError(Exception):
    """A step failed; the message says which and why."""


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


def load_config() -> dict[str, Any]:
    try:
        return dict(json.loads(CONFIG.read_text()))
    except (OSError, ValueError) as exc:
        raise BackupError(f"cannot read the settings {CONFIG}: {exc}") from exc


def restic_env(cfg: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RESTIC_REPOSITORY": cfg["repository"],
            "RESTIC_PASSWORD_FILE": cfg["password_file"],
            "RESTIC_CACHE_DIR": cfg["cache_dir"],
        }
    )
    return env


def restic_cmd(cfg: dict[str, Any], *args: str) -> list[str]:
    return ["restic", "-o", f"sftp.command={cfg['sftp_command']}", *args]


def restic(cfg: dict[str, Any], *args: str, quiet: bool = False) -> str:
    """Run restic; return stdout; raise with restic's own last words on failure."""
    result = subprocess.run(
        restic_cmd(cfg, *args),
        env=restic_env(cfg),
        capture_output=True,
        text=True,
        check=False,
    )
    if not quiet and result.stderr.strip():
        sys.stderr.write(result.stderr)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackupError(f"restic {args[0]} failed (exit {result.returncode}): {last}")
    return result.stdout


def regular_file(path: Path) -> os.stat_result | None:
    """The database file's own status, never a link's: None when nothing is there.

    The app writes the directory the database lives in, so it can put a symbolic
    link where its database was: followed, the copy would run as the target's
    owner (root) and put the target (another service's database, a secret) into
    the snapshot. A link or anything but a regular file is refused."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(status.st_mode):
        raise BackupError(
            f"{path} is a symbolic link, not the database: the backup copies only the file "
            "itself, never what a link points to. Put the database file back at that path "
            "(the app's volume holds it), then run the backup again."
        )
    if not stat.S_ISREG(status.st_mode):
        raise BackupError(f"{path} is not a regular file: the backup copies only a database file")
    return status


def same_file(path: str, identity: tuple[int, int]) -> None:
    """Fail unless `path` is still the regular file (device, inode) the backup chose."""
    status = regular_file(Path(path))
    if status is None or (status.st_dev, status.st_ino) != identity:
        raise BackupError(
            f"{path} was replaced while the backup copied it (not the file it checked): "
            "run the backup again"
        )


def sqlite_copy(src: str, dst: str, identity: tuple[int, int]) -> None:
    """Online backup of a live SQLite database (WAL or not) into dst, then check it.

    SQLite opens by name, so the file the parent checked (`identity`: device and
    inode) is checked again before and after the copy: one swapped for a link or
    another file in between fails the copy instead of entering the snapshot."""
    same_file(src, identity)
    source = sqlite3.connect(src, timeout=60)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
            check = target.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the copy of {src} fails its integrity check: {check}")
        finally:
            target.close()
    finally:
        source.close()
    same_file(src, identity)


def sqlite_info(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise BackupError(f"no database at {path}")
    db = sqlite3.connect(path)
    try:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        tables = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        rows = {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        db.close()
    return {"path": path, "integrity": check, "rows": rows}


def copy_databases(cfg: dict[str, Any], staging: Path) -> list[dict[str, Any]]:
    """Consistent copies of each configured database that exists, into staging/<name>/."""
    copied = []
    for entry in cfg["databases"]:
        src = Path(entry["path"])
        owner = regular_file(src)
        if owner is None:
            log("database_skipped", name=entry["name"], path=str(src), why="no such file")
            continue
        target_dir = staging / entry["name"]
        target_dir.mkdir(mode=0o700)
        os.chown(target_dir, owner.st_uid, owner.st_gid)
        dst = target_dir / src.name
        started = time.monotonic()
        # As the file's owner: a WAL database opened by root could leave root-owned
        # -wal/-shm files that the app cannot open afterwards. The owner may not
        # pass the directories above the file (/var/lib/docker is root's), so
        # it keeps one capability, to read and search; what it writes is checked
        # as the owner's.
        result = subprocess.run(
            [
                "setpriv",
                f"--reuid={owner.st_uid}",
                f"--regid={owner.st_gid}",
                "--clear-groups",
                "--inh-caps=+dac_read_search",
                "--ambient-caps=+dac_read_search",
                sys.executable,
                __file__,
                "sqlite-copy",
                str(src),
                str(dst),
                str(owner.st_dev),
                str(owner.st_ino),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BackupError(
                f"the consistent copy of {src} failed: {result.stderr.strip() or result.stdout}"
            )
        info = sqlite_info(str(dst))
        copied.append({"name": entry["name"], "source": str(src), "bytes": dst.stat().st_size})
        log(
            "database_copied",
            name=entry["name"],
            source=str(src),
            bytes=dst.stat().st_size,
            rows=info["rows"],
            seconds=round(time.monotonic() - started, 3),
        )
    return copied


def read_previous_metrics(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.partition(" ")
                values[name] = value
    except OSError:
        pass
    return values


def write_metrics(cfg: dict[str, Any], figures: dict[str, float], ok: bool) -> None:
    path = Path(cfg["textfile"])
    previous = read_previous_metrics(path)
    now = time.time()
    last_success = (
        str(now) if ok else previous.get("archibald_backup_last_success_timestamp_seconds")
    )
    lines = gauge(
        "archibald_backup_last_run_timestamp_seconds", "When the last backup run ended.", now
    )
    lines += gauge(
        "archibald_backup_last_run_success", "1 if the last backup run succeeded.", int(ok)
    )
    if last_success is not None:
        lines += gauge(
            "archibald_backup_last_success_timestamp_seconds",
            "When the last good backup ended.",
            last_success,
        )
    # The sizes and duration describe the last good run: kept from it on a failure.
    for name, help_text in (
        ("archibald_backup_duration_seconds", "Wall time of the last good backup run."),
        ("archibald_backup_size_bytes", "Bytes the last good snapshot holds."),
        ("archibald_backup_added_bytes", "Bytes the last good backup added to the repository."),
        (
            "archibald_backup_repository_size_bytes",
            "Size of the repository after the last good run.",
        ),
    ):
        key = name.removeprefix("archibald_backup_")
        value = str(figures[key]) if ok and key in figures else previous.get(name)
        if value is not None:
            lines += gauge(name, help_text, value)
    write_textfile(path, lines)


def write_textfile(path: Path, lines: list[str]) -> None:
    """Replace a textfile collector file at once: the exporter never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=".backup") as tmp:
        tmp.write("\n".join(lines) + "\n")
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)


def gauge(name: str, help_text: str, value: object) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]


def write_check_metrics(cfg: dict[str, Any], seconds: float, ok: bool) -> None:
    """The check's outcome; the time of its last success is kept through a failure."""
    path = Path(cfg["check_textfile"])
    now = time.time()
    last_success = (
        now if ok else read_previous_metrics(path).get(f"{CHECK}_last_success_timestamp_seconds")
    )
    lines = gauge(f"{CHECK}_last_run_timestamp_seconds", "When the last check ended.", now)
    lines += gauge(f"{CHECK}_last_run_success", "1 if the last check found no fault.", int(ok))
    lines += gauge(f"{CHECK}_duration_seconds", "Wall time of the last check.", round(seconds, 3))
    if last_success is not None:
        lines += gauge(
            f"{CHECK}_last_success_timestamp_seconds",
            "When the last check that found no fault ended.",
            last_success,
        )
    write_textfile(path, lines)


def run_check(cfg: dict[str, Any]) -> None:
    """restic check, with a share of the pack files read back and verified."""
    args = ["check"]
    if cfg.get("check_read_data_subset"):
        args.append(f"--read-data-subset={cfg['check_read_data_subset']}")
    restic(cfg, *args, quiet=True)


def ensure_repository(cfg: dict[str, Any]) -> None:
    """Create the repository on its first use; a wrong password stops here."""
    try:
        restic(cfg, "cat", "config", quiet=True)
        return
    except BackupError as exc:
        if "wrong password" in str(exc) or "no key found" in str(exc):
            raise BackupError(
                f"the password does not open the repository {cfg['repository']}: "
                "check vault_backup_password"
            ) from exc
    restic(cfg, "init")
    log("repository_created", repository=cfg["repository"])


def summary_of(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("message_type") == "summary":
            return data
    raise BackupError("restic backup printed no summary")


def run_backup(cfg: dict[str, Any]) -> dict[str, float]:
    started = time.monotonic()
    staging = Path(cfg["staging_dir"])
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # Traversable, not readable: each copy is made by its database's owner into a
    # 0700 directory of its own below.
    staging.chmod(0o711)
    try:
        ensure_repository(cfg)
        copy_databases(cfg, staging)
        paths = [str(staging)] + [p for p in cfg["paths"] if os.path.exists(p)]
        missing = [p for p in cfg["paths"] if not os.path.exists(p)]
        if missing:
            log("paths_skipped", paths=missing, why="not on this host")
        args = ["backup", "--json", "--host", cfg["host"]]
        for tag in cfg["tags"]:
            args += ["--tag", tag]
        for pattern in cfg["excludes"]:
            args += ["--exclude", pattern]
        summary = summary_of(restic(cfg, *args, *paths, quiet=True))
        log(
            "snapshot_saved",
            snapshot=summary.get("snapshot_id"),
            files=summary.get("total_files_processed"),
            bytes=summary.get("total_bytes_processed"),
            added=summary.get("data_added"),
        )
        forget = ["forget", "--host", cfg["host"], "--group-by", "host,tags"]
        for tag in cfg["tags"]:
            forget += ["--tag", tag]
        for unit in ("daily", "weekly", "monthly"):
            forget += [f"--keep-{unit}", str(cfg["retention"][unit])]
        if cfg["prune"]:
            forget.append("--prune")
        out = restic(cfg, *forget, quiet=True)
        counts = [
            line.strip()
            for line in out.splitlines()
            if re.match(r"\s*(keep|remove) \d+ snapshots?", line)
        ]
        log("retention_applied", policy=cfg["retention"], prune=cfg["prune"], snapshots=counts)
        stats = json.loads(restic(cfg, "stats", "--json", "--mode", "raw-data", quiet=True))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "duration_seconds": round(time.monotonic() - started, 3),
        "size_bytes": float(summary.get("total_bytes_processed", 0)),
        "added_bytes": float(summary.get("data_added", 0)),
        "repository_size_bytes": float(stats.get("total_size", 0)),
    }


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    if command == "sqlite-copy" and len(argv) == 6:
        sqlite_copy(argv[2], argv[3], (int(argv[4]), int(argv[5])))
        return 0
    if command == "sqlite-info" and len(argv) == 3:
        print(json.dumps(sqlite_info(argv[2])))
        return 0
    cfg = load_config()
    if command == "restic":
        return subprocess.run(
            restic_cmd(cfg, *argv[2:]), env=restic_env(cfg), check=False
        ).returncode
    if command not in ("backup", "check"):
        sys.stderr.write(__doc__ or "")
        return 2
    with one_at_a_time(cfg, command):
        return checked(cfg) if command == "check" else backed_up(cfg)


@contextlib.contextmanager
def one_at_a_time(cfg: dict[str, Any], command: str) -> Iterator[None]:
    """Hold the host's backup lock: a backup and a check never overlap."""
    path = Path(cfg["lock_file"])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("waiting_for_lock", command=command, lock=str(path))
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def backed_up(cfg: dict[str, Any]) -> int:
    log("backup_started", repository=cfg["repository"], host=cfg["host"])
    try:
        figures = run_backup(cfg)
    except (BackupError, OSError, ValueError, sqlite3.Error) as exc:
        write_metrics(cfg, {}, ok=False)
        log("backup_failed", error=str(exc))
        sys.stderr.write(f"backup failed: {exc}\n")
        return 1
    write_metrics(cfg, figures, ok=True)
    log("backup_finished", **figures)
    return 0


def checked(cfg: dict[str, Any]) -> int:
    log("check_started", repository=cfg["repository"], read=cfg.get("check_read_data_subset"))
    started = time.monotonic()
    try:
        run_check(cfg)
    except (BackupError, OSError) as exc:
        write_check_metrics(cfg, time.monotonic() - started, ok=False)
        log("check_failed", error=str(exc))
        sys.stderr.write(
            f"the repository check failed: {exc}\nNothing was changed. OPERATIONS.md 10.6 "
            "(BackupCheckFailed) says what to do.\n"
        )
        return 1
    write_check_metrics(cfg, time.monotonic() - started, ok=True)
    log("check_finished", seconds=round(time.monotonic() - started, 3))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (BackupError, sqlite3.Error) as exc:
        sys.stderr.write(f"{exc}\n")
        sys.exit(1)
