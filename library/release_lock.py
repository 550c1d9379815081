#!/usr/bin/python
# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_lock
short_description: take or release a per-application release lock on the host
description:
  - Makes sure only one release of an application runs at a time. The lock is a small JSON file
    with the keys C(owner), C(acquired_at) and C(expires_at) (ISO 8601, UTC); it names its holder
    and expires after O(ttl) seconds, so a release killed halfway does not block the next one for
    ever.
  - O(state=present) takes the lock. A lock held by another owner is refused with its holder and
    expiry; the same owner taking it again refreshes the expiry; an expired lock is taken over and
    RV(took_over_from) names the previous holder.
  - O(state=absent) releases the lock only when O(owner) holds it (or it has expired, or
    O(force=true)); otherwise it fails naming the holder.
  - Changes are serialised with C(flock) on the lock's directory and written with an atomic
    rename, so two releases started at the same moment cannot both get the lock.
options:
  path:
    description: Lock file. Its directory must exist.
    type: path
    required: true
  owner:
    description: Who holds the lock, for example V(alice@laptop) or V(CI run 1234).
    type: str
    required: true
  state:
    description: V(present) takes the lock, V(absent) releases it.
    type: str
    choices: [present, absent]
    default: present
  ttl:
    description: Seconds after which the lock expires and may be taken over.
    type: int
    default: 900
  force:
    description: Take or release the lock even when another owner holds it.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports what would happen (including refusals) without writing.
  diff_mode:
    support: none
notes:
  - RV(changed) is true whenever the lock file is written or removed, including a refresh by the
    same owner.
author:
  - archibald-ops
"""

EXAMPLES = r"""
- name: Take the release lock
  release_lock:
    path: /var/lib/archibald/archibald/release.lock
    owner: "{{ lookup('env', 'USER') }}@{{ inventory_hostname }} {{ ci_run | default('') }}"
    ttl: 900

- name: Release the release lock
  release_lock:
    path: /var/lib/archibald/archibald/release.lock
    owner: "{{ lookup('env', 'USER') }}@{{ inventory_hostname }} {{ ci_run | default('') }}"
    state: absent
"""

RETURN = r"""
lock_path:
  description: The lock file (not C(path), which Ansible would decorate with file attributes).
  returned: always
  type: str
action:
  description: What was done, one of C(created), C(refreshed), C(took_over), C(released), C(none).
  returned: always
  type: str
held:
  description: Whether O(owner) holds the lock after the task.
  returned: always
  type: bool
lock:
  description: Content of the lock file after the task (null when there is none).
  returned: always
  type: dict
  sample: {"owner": "ci run 42", "acquired_at": "2025-01-01T12:00:00Z",
           "expires_at": "2025-01-01T12:15:00Z"}
took_over_from:
  description:
    - The previous content of a lock held by someone else that was taken over (expired or
      O(force=true)) or released on their behalf; null otherwise.
  returned: always
  type: dict
"""

import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ansible.module_utils.basic import AnsibleModule


class LockError(Exception):
    """A refusal or a problem a person has to act on; the message says what to do."""


@dataclass
class Outcome:
    action: str  # created | refreshed | took_over | released | none
    held: bool
    lock: dict[str, Any] | None
    took_over_from: dict[str, Any] | None = None
    changed: bool = field(init=False)

    def __post_init__(self) -> None:
        self.changed = self.action != "none"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_lock(text: str) -> dict[str, Any] | None:
    """Parse lock file content; None when empty. Unreadable content gives {"unreadable": why}."""
    if not text.strip():
        return None
    try:
        content = json.loads(text)
    except ValueError as exc:
        return {"unreadable": f"not JSON: {exc}"}
    if not isinstance(content, dict) or not isinstance(content.get("owner"), str):
        return {"unreadable": f"no owner recorded in {text[:200]!r}"}
    if parse_iso(content.get("expires_at")) is None:
        return {"unreadable": f"no valid expires_at in {text[:200]!r}", "owner": content["owner"]}
    return content


def is_expired(lock: dict[str, Any], now: datetime) -> bool:
    expires = parse_iso(lock.get("expires_at"))
    return expires is not None and expires <= now


def describe(path: str, lock: dict[str, Any]) -> str:
    if "unreadable" in lock:
        return f"release lock {path} exists but cannot be read ({lock['unreadable']})"
    return (
        f"release lock {path} is held by {lock['owner']} since {lock.get('acquired_at')} "
        f"(expires {lock.get('expires_at')})"
    )


def plan_acquire(
    path: str, current: dict[str, Any] | None, owner: str, ttl: int, force: bool, now: datetime
) -> Outcome:
    """Decide how to take the lock; raise LockError when another owner holds it."""
    fresh = {
        "owner": owner,
        "acquired_at": iso(now),
        "expires_at": iso(now + timedelta(seconds=ttl)),
    }
    if current is None:
        return Outcome("created", True, fresh)
    if "unreadable" not in current and current["owner"] == owner:
        fresh["acquired_at"] = current.get("acquired_at") or fresh["acquired_at"]
        return Outcome("refreshed", True, fresh)
    if force or ("unreadable" not in current and is_expired(current, now)):
        return Outcome("took_over", True, fresh, took_over_from=current)
    raise LockError(
        f"{describe(path, current)}; wait for that release to finish or the lock to expire, or, "
        f"if the holder is gone, remove it (rm {path}, or run release_lock with force: true)"
    )


def plan_release(
    path: str, current: dict[str, Any] | None, owner: str, force: bool, now: datetime
) -> Outcome:
    """Decide how to release the lock; raise LockError when another owner holds it."""
    if current is None:
        return Outcome("none", False, None)
    mine = "unreadable" not in current and current["owner"] == owner
    if mine or force or ("unreadable" not in current and is_expired(current, now)):
        return Outcome("released", False, None, took_over_from=None if mine else current)
    raise LockError(
        f"cannot release: {describe(path, current)}, not by {owner}; leave it to its holder, or, "
        f"if the holder is gone, run release_lock with force: true"
    )


def read_lock_file(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return parse_lock(handle.read())
    except FileNotFoundError:
        return None


@contextmanager
def directory_lock(path: str) -> Iterator[None]:
    """Serialise lock changes with flock on the lock file's directory."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise LockError(
            f"directory {directory} for release lock {path} does not exist; create it first"
        )
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_json_atomically(
    path: str, content: dict[str, Any], move: Callable[[str, str], None]
) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".release-lock-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(content, handle, sort_keys=True)
            handle.write("\n")
        os.chmod(tmp, 0o644)
        move(tmp, path)
        os.chmod(path, 0o644)  # atomic_move keeps the old mode or applies the umask
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run(
    path: str,
    owner: str,
    state: str,
    ttl: int,
    force: bool,
    check_mode: bool,
    now: datetime,
    move: Callable[[str, str], None] = os.replace,
) -> Outcome:
    """Take or release the lock at ``path``; the pure decisions are plan_acquire/plan_release."""
    if not owner.strip():
        raise LockError("owner must name who takes the lock (user@host or the CI run), got ''")
    if ttl < 1:
        raise LockError(f"ttl must be at least 1 second, got {ttl}")
    with directory_lock(path):
        current = read_lock_file(path)
        if state == "present":
            outcome = plan_acquire(path, current, owner, ttl, force, now)
            if not check_mode and outcome.lock is not None:
                write_json_atomically(path, outcome.lock, move)
        else:
            outcome = plan_release(path, current, owner, force, now)
            if not check_mode and outcome.action == "released":
                os.unlink(path)
    return outcome


ARGUMENT_SPEC: dict[str, Any] = {
    "path": {"type": "path", "required": True},
    "owner": {"type": "str", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "ttl": {"type": "int", "default": 900},
    "force": {"type": "bool", "default": False},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    p = module.params

    def move(src: str, dest: str) -> None:
        module.atomic_move(src, dest)

    try:
        outcome = run(
            p["path"],
            p["owner"],
            p["state"],
            p["ttl"],
            p["force"],
            module.check_mode,
            datetime.now(UTC),
            move,
        )
    except LockError as exc:
        module.fail_json(msg=str(exc), lock_path=p["path"])
    except OSError as exc:
        module.fail_json(msg=f"release lock {p['path']}: {exc}", lock_path=p["path"])
    module.exit_json(
        changed=outcome.changed,
        lock_path=p["path"],
        action=outcome.action,
        held=outcome.held,
        lock=outcome.lock,
        took_over_from=outcome.took_over_from,
    )


if __name__ == "__main__":
    main()
