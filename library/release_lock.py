#!/usr/bin/python
# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_lock
short_description: take, refresh or give back an application's fenced release lock on the host
description:
  - Makes sure only one release, rollback, repair or retirement of an application changes the
    host at a time. The lock is C(release.lock) in O(dir), a JSON file with C(owner), C(token),
    C(acquired_at) and C(expires_at) (UTC).
  - O(state=present) without O(token) takes a free or expired lock and returns a new RV(token);
    a lock held by someone else is waited for up to O(wait) seconds and then refused, naming its
    holder, its last renewal and its expiry. With O(report_held) such a lock is reported at once
    instead (RV(action) V(held), RV(held)), so that a run prints who holds it before it waits.
    With O(token) it refreshes the lock this run holds (a heartbeat) and fails when the
    lock expired or was taken over, so the run stops before its next write.
  - O(state=absent) gives the lock back when O(token) holds it; a lock that was taken over in
    the meantime is left to its new holder.
  - Every change holds C(flock) on the directory and is written durably; the file format and the
    decisions live in C(module_utils/bluegreen.py), which the state and switch modules use to
    check the token before they write.
options:
  dir:
    description: The app's directory (it must exist).
    type: path
    required: true
  owner:
    description: Who takes the lock, for example V(alice@laptop, run 20250101T1200Z-42).
    type: str
  state:
    description: V(present) takes or refreshes the lock, V(absent) gives it back.
    type: str
    choices: [present, absent]
    default: present
  token:
    description: The token this run got when it took the lock (refresh and give back).
    type: str
    no_log: false
  ttl:
    description: Seconds from now after which the lock expires and may be taken over.
    type: int
    default: 300
  wait:
    description: Seconds to wait for a lock held by someone else before refusing.
    type: int
    default: 0
  force:
    description: Take over a lock that someone else holds and that has not expired.
    type: bool
    default: false
  take_over_from:
    description:
      - Also take over a lock that has not expired when its owner contains this text; empty
        never does.
      - A CI run's clean-up passes its own run, for example V((CI run 42\)), because a cancelled
        C(ansible-playbook) runs no C(always) section and leaves its lock held until the lease
        ends.
    type: str
    default: ""
  report_held:
    description:
      - Do not wait for a lock that someone else holds; return at once, unchanged, with
        RV(action) V(held) and RV(held) (who holds it, its last renewal, its expiry and what to
        do). A free or expired lock is taken as without it.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports what would happen (including refusals) without writing.
  diff_mode:
    support: none
notes:
  - The lock is transient. Taking, refreshing and giving back one's own lock leaves the host as
    it was, so RV(changed) is false for them and a no-op release reports C(changed=0). Taking
    over or removing someone else's lock reports RV(changed).
author:
  - archibald-ops
"""

EXAMPLES = r"""
- name: Take the release lock
  release_lock:
    dir: /var/lib/archibald/archibald
    owner: "{{ release_owner }}"
    ttl: 300
  register: release_lock

- name: Refresh the lock before the next step
  release_lock:
    dir: /var/lib/archibald/archibald
    token: "{{ release_lock.token }}"
    ttl: 300

- name: Give the lock back
  release_lock:
    dir: /var/lib/archibald/archibald
    token: "{{ release_lock.token }}"
    state: absent
"""

RETURN = r"""
action:
  description:
    - What was done, one of C(created), C(refreshed), C(took_over), C(released), C(none), or
      C(held) (with O(report_held), someone else holds the lock and nothing was done).
  returned: always
  type: str
token:
  description: The lock's token after the task (null when given back).
  returned: always
  type: str
lock:
  description:
    - Content of the lock file after the task (null when there is none); C(renewed_at) is its
      last renewal, C(taken) how it was taken over (C(how) V(expired), V(forced) or
      V(own run), C(from), C(at)), if it was.
  returned: always
  type: dict
held:
  description: Who holds the lock and what to do, when RV(action) is C(held); null otherwise.
  returned: always
  type: str
took_over_from:
  description: The lock of someone else that was taken over or removed; null otherwise.
  returned: always
  type: dict
waited:
  description: Seconds spent waiting for another holder.
  returned: always
  type: float
"""

import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen import (
    LOCK_FILE,
    BlueGreenError,
    LockError,
    LockLost,
    directory_lock,
    parse_lock,
    plan_acquire,
    plan_release,
    read_text,
    write_json_durably,
)


def run(
    params: Mapping[str, Any],
    check_mode: bool,
    now: Callable[[], datetime],
    sleep: Callable[[float], None] = time.sleep,
    move: Callable[[str, str], None] = os.replace,
) -> dict[str, Any]:
    """Take, refresh or give back the lock; waiting polls once a second up to ``wait``."""
    path = os.path.join(params["dir"], LOCK_FILE)
    token = params.get("token")
    if params["state"] == "present" and not token and not (params.get("owner") or "").strip():
        raise BlueGreenError("owner must name who takes the lock (user@host or the CI run)")
    if params["ttl"] < 1:
        raise BlueGreenError(f"ttl must be at least 1 second, got {params['ttl']}")
    waited = 0.0
    while True:
        try:
            with directory_lock(params["dir"]):
                current = parse_lock(read_text(path))
                if params["state"] == "absent":
                    action, gone = plan_release(path, current, token, params["force"], now())
                    if action == "released" and not check_mode:
                        os.unlink(path)
                    return {
                        "action": action,
                        "token": None,
                        "lock": None,
                        "took_over_from": gone,
                        "waited": waited,
                        "held": None,
                    }
                action, lock, gone = plan_acquire(
                    path,
                    current,
                    params.get("owner") or "",
                    params["ttl"],
                    now(),
                    token,
                    params["force"],
                    params.get("take_over_from") or "",
                )
                if not check_mode:
                    write_json_durably(path, lock, move)
                return {
                    "action": action,
                    "token": lock["token"],
                    "lock": lock,
                    "took_over_from": gone,
                    "waited": waited,
                    "held": None,
                }
        except LockLost:
            raise
        except LockError as exc:
            if params.get("report_held") and params["state"] == "present" and not token:
                return {
                    "action": "held",
                    "token": None,
                    "lock": current,
                    "took_over_from": None,
                    "waited": waited,
                    "held": str(exc),
                }
            if waited >= params["wait"]:
                raise
        sleep(1.0)
        waited += 1.0


ARGUMENT_SPEC: dict[str, Any] = {
    "dir": {"type": "path", "required": True},
    "owner": {"type": "str"},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "token": {"type": "str", "no_log": False},
    "ttl": {"type": "int", "default": 300},
    "wait": {"type": "int", "default": 0},
    "force": {"type": "bool", "default": False},
    "take_over_from": {"type": "str", "default": ""},
    "report_held": {"type": "bool", "default": False},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)

    def move(src: str, dest: str) -> None:
        module.atomic_move(src, dest)

    try:
        result = run(module.params, module.check_mode, lambda: datetime.now(UTC), move=move)
    except BlueGreenError as exc:
        module.fail_json(msg=str(exc), lock_dir=module.params["dir"])
    except OSError as exc:
        module.fail_json(msg=f"release lock in {module.params['dir']}: {exc}")
    module.exit_json(changed=result["took_over_from"] is not None, **result)


if __name__ == "__main__":
    main()
