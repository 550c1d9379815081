#!/usr/bin/python
# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: sqlite_backup
short_description: copy a SQLite database consistently with SQLite's online backup API
description:
  - Copies O(src) to O(dest) page by page with SQLite's backup API (what the C(.backup) command
    of the sqlite3 shell does), never as a plain file copy, so that the copy is consistent even
    when a write-ahead log or a writer is still around.
  - The copy is written beside O(dest), checked with C(PRAGMA integrity_check), given the owner,
    group and mode of O(src) (the app's user) and moved into place atomically.
  - Used by C(playbooks/adopt-compose.yml) to move the compose stack's job database into the
    bluegreen role's data volume while the old backend is stopped.
options:
  src:
    description: The database to copy (it must exist).
    type: path
    required: true
  dest:
    description: Where the copy goes; its directory must exist. An existing file is replaced.
    type: path
    required: true
  count_table:
    description: A table whose rows are counted in both databases and returned (empty for none).
    type: str
    default: ""
attributes:
  check_mode:
    support: full
    description: Counts the rows of O(src) and reports a change without writing.
  diff_mode:
    support: none
author:
  - archibald-ops
"""

EXAMPLES = r"""
- name: Copy the old stack's job database into the data volume
  sqlite_backup:
    src: /var/lib/docker/volumes/archibald_data/_data/jobs.sqlite3
    dest: /var/lib/docker/volumes/archibald-data/_data/jobs.sqlite3
    count_table: jobs
"""

RETURN = r"""
src_rows:
  description: Rows of O(count_table) in O(src) (null without O(count_table)).
  type: int
  returned: always
dest_rows:
  description: Rows of O(count_table) in the copy (null without it, or in check mode).
  type: int
  returned: always
bytes:
  description: Size of the copy in bytes (0 in check mode).
  type: int
  returned: always
seconds:
  description: How long the copy took.
  type: float
  returned: always
"""

import os
import re
import sqlite3
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC: dict[str, Any] = {
    "src": {"type": "path", "required": True},
    "dest": {"type": "path", "required": True},
    "count_table": {"type": "str", "default": ""},
}
_TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BackupError(Exception):
    """A copy that cannot be made or trusted; the message says why."""


def count_rows(path: str, table: str) -> int | None:
    """Rows of `table` in the database at `path`; None without a table."""
    if not table:
        return None
    if not _TABLE_RE.match(table):
        raise BackupError(f"count_table {table!r} is not a plain table name")
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.Error as exc:
        raise BackupError(f"cannot count the rows of {table} in {path}: {exc}") from exc
    finally:
        conn.close()


def backup(src: str, tmp: str) -> None:
    """Copy `src` into the new file `tmp` with the backup API and check the copy."""
    if not os.path.isfile(src):
        raise BackupError(f"the database {src} does not exist")
    # Not read-only: a log left by a writer that was killed must be recovered.
    source = sqlite3.connect(src)
    target = sqlite3.connect(tmp)
    try:
        source.backup(target)
        # A single file: the copy carries no write-ahead log of its own.
        target.execute("PRAGMA journal_mode=DELETE")
        check = target.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"the copy of {src} fails SQLite's integrity check: {check}")
    except sqlite3.Error as exc:
        raise BackupError(f"SQLite could not copy {src}: {exc}") from exc
    finally:
        target.close()
        source.close()


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    src, dest, table = module.params["src"], module.params["dest"], module.params["count_table"]
    started = time.monotonic()
    try:
        src_rows = count_rows(src, table) if os.path.isfile(src) else None
        if module.check_mode:
            if not os.path.isfile(src):
                raise BackupError(f"the database {src} does not exist")
            module.exit_json(changed=True, src_rows=src_rows, dest_rows=None, bytes=0, seconds=0.0)
        if not os.path.isdir(os.path.dirname(dest)):
            raise BackupError(f"the directory of {dest} does not exist")
        tmp = f"{dest}.backup-{os.getpid()}"
        try:
            backup(src, tmp)
            dest_rows = count_rows(tmp, table)
            if dest_rows != src_rows:
                raise BackupError(f"{src} has {src_rows} rows in {table} but the copy {dest_rows}")
            size = os.path.getsize(tmp)
            # A stale log of an older file at dest must not be replayed onto the copy.
            for suffix in ("-wal", "-shm", "-journal"):
                if os.path.exists(dest + suffix):
                    os.unlink(dest + suffix)
            module.atomic_move(tmp, dest)
            # After the move: atomic_move gives a file it creates to the caller.
            info = os.stat(src)
            os.chown(dest, info.st_uid, info.st_gid)
            os.chmod(dest, info.st_mode & 0o7777)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except (BackupError, OSError) as exc:
        module.fail_json(msg=f"The database was not copied: {exc}")
    module.exit_json(
        changed=True,
        src_rows=src_rows,
        dest_rows=dest_rows,
        bytes=size,
        seconds=round(time.monotonic() - started, 3),
    )


if __name__ == "__main__":
    main()
