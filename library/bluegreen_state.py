#!/usr/bin/python
# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bluegreen_state
short_description: record a switch, or mark a version bad, in a blue/green host's state file
description:
  - Writes the host-side record of a blue/green application, C(state.json) in O(dir). It holds
    the active colour, what was started on each colour (version, image digest and ID,
    configuration hash, start time), the versions marked bad and a capped history of events.
  - Every write holds the directory's flock and checks that O(token) still holds the release
    lock, so a run whose lock expired or was taken over cannot write (it fails and says so). The
    file is replaced durably (fsync of the file and of the directory, then rename).
  - With O(markers_file), Prometheus' deploy markers (which colour serves which version, each
    colour's share of clients, when traffic last moved, the rollbacks by a gate) are written
    there after the state, under the same lock, from the state written; the host's watchdog
    writes the same text after its own switch (C(render_markers) in C(module_utils/bluegreen.py)).
  - With O(retire) and O(keep), the same write sets the rollback window of the colour traffic
    left (C(retire-<colour>.json), which the host's retirement timer reads) and cancels a pending
    one of the colour that serves again, under the same lock (one module call records a move).
  - With O(journal), a V(switch) that moved traffic is logged to the journal under that syslog
    identifier as one JSON line whose C(event) is C(color_switch).
  - An existing file that is not a valid state is never overwritten. The format, its validation
    and the write live in C(module_utils/bluegreen.py), the one owner of the record.
options:
  dir:
    description: The app's directory, for example C(/var/lib/archibald/archibald).
    type: path
    required: true
  action:
    description:
      - V(read) returns the state (no lock needed).
      - V(switch) records that traffic now goes to O(color), running what O(record) describes,
        and appends the history event O(event).
      - V(mark_bad) lists O(version) in C(bad_versions) with O(reason); V(clear_bad) removes it.
      - V(canary) sets the canary in progress to O(canary) (null ends it), recording O(record) for
        the canary's colour when given, with the history event O(event).
    type: str
    choices: [read, switch, mark_bad, clear_bad, canary]
    default: read
  token:
    description: The release lock's token (from C(release_lock)); required by every write.
    type: str
    no_log: false
  app:
    description: Application name; a file naming another application is refused.
    type: str
  color:
    description: Colour traffic now goes to (V(switch)).
    type: str
  record:
    description: What runs on O(color), keys C(version), C(digest), C(image_id), C(config),
      C(started_at), C(spec) (the containers' settings, module_utils/bluegreen.py SPEC_KEYS)
      (V(switch)).
    type: dict
  event:
    description: History event of a V(switch) (default V(switch)) or a V(canary).
    type: str
    choices: [switch, rollback, auto_rollback, repair, canary_start, canary_step, canary_pause,
      canary_abort]
  canary:
    description: The canary in progress (V(canary)), keys C(color), C(version), C(digest),
      C(weight), C(step), C(steps), C(paused), C(since), C(by); null when it ends.
    type: dict
  version:
    description: Version for V(mark_bad) and V(clear_bad).
    type: str
  reason:
    description: Why a version is marked bad (V(mark_bad)), or why a canary ended (V(canary)).
    type: str
    default: marked bad by hand
  by:
    description: Who made the change, for the history.
    type: str
    default: unknown
  colors:
    description: The two colour names.
    type: list
    elements: str
    default: [blue, green]
  history_limit:
    description: Number of history events kept (the oldest are dropped).
    type: int
    default: 50
  markers_file:
    description:
      - Write Prometheus' deploy markers for node exporter's textfile collector to this file
        (root, mode 0644) after every write action, from the state after it; written when their
        text changes, so a rerun reports no change. The metrics are named after O(app).
      - Not with V(read), which holds no lock.
    type: path
  retire:
    description:
      - After a write action, give colour C(color) a rollback window of C(window_s) seconds from
        now. Its retirement file gets the deadline after which the host's timer stops it
        (C(retirement) in C(module_utils/bluegreen.py) owns the format).
    type: dict
    suboptions:
      color:
        description: The colour to retire after its window.
        type: str
        required: true
      window_s:
        description: Seconds from now until the colour may be stopped.
        type: int
        required: true
  keep:
    description: After a write action, cancel a pending retirement of this colour (it serves).
    type: str
  journal:
    description: Syslog identifier (facility daemon) of the journal line a V(switch) logs when
      it moved traffic; none logs nothing.
    type: str
  lease:
    description: Renew the release lock's lease for this many seconds from now before writing
      (every write is a heartbeat of the run that holds the lock); 0 leaves it as it is.
    type: int
    default: 0
attributes:
  check_mode:
    support: full
    description: Computes and returns the new state and diff without writing the file.
  diff_mode:
    support: full
    description: Returns the file content before and after, as sorted, indented JSON.
author:
  - archibald-ops
"""

EXAMPLES = r"""
- name: Record the switch to green
  bluegreen_state:
    dir: /var/lib/archibald/archibald
    app: archibald
    action: switch
    token: "{{ release_lock.token }}"
    color: green
    record:
      version: "{{ app_version }}"
      digest: sha256:4f1c...
    by: "{{ release_owner }}"
    markers_file: /var/lib/prometheus/node-exporter/archibald_deploy.prom

- name: Mark a version bad after an automatic rollback
  bluegreen_state:
    dir: /var/lib/archibald/archibald
    action: mark_bad
    token: "{{ release_lock.token }}"
    version: "{{ app_version }}"
    reason: error rate above 10 % after the switch
"""

RETURN = r"""
state:
  description: The state after the task (the state that would be written in check mode).
  returned: always
  type: dict
exists:
  description: Whether the state file existed (and was not empty) before the task.
  returned: always
  type: bool
retirement:
  description: The retirement file written (O(retire)) and the one removed (O(keep)), if any.
  returned: when O(retire) or O(keep) is given
  type: dict
  sample: {"set": {"color": "blue", "deadline": 1735732800, "deadline_utc": "2025-01-01T12:00:00Z",
           "set_by": "ci run 42"}, "cancelled": "green"}
markers:
  description: The deploy markers' file and whether its text changed (with O(markers_file)).
  returned: when O(markers_file) is given
  type: dict
  sample: {"path": "/var/lib/prometheus/node-exporter/archibald_deploy.prom", "changed": true}
event:
  description: The history event appended by this task, if any.
  returned: when an event was appended
  type: dict
  sample: {"at": "2025-01-01T12:00:00Z", "event": "switch", "from": "blue", "to": "green",
           "version": "v2", "digest": "sha256:...", "previous_version": "v1", "by": "ci run 42"}
"""

import json
import os
import syslog
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen import (
    BlueGreenError,
    StateError,
    apply_action,
    check_colors,
    fenced,
    load_state,
    paths,
    read_text,
    render_markers,
    render_state,
    retirement,
    write_durably,
    write_json_durably,
)

Journal = Callable[[str, str], None]


def journal_line(event: Mapping[str, Any]) -> str:
    """The journal's line for a switch: one JSON object, as every release event is logged."""
    return json.dumps(
        {
            "event": "color_switch",
            "kind": event.get("event"),
            "from": event.get("from"),
            "to": event.get("to"),
            "version": event.get("version"),
            "digest": event.get("digest"),
            "by": event.get("by"),
        }
    )


def syslog_daemon(ident: str, line: str) -> None:
    syslog.openlog(ident, syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(syslog.LOG_INFO, line)
    syslog.closelog()


def run(
    params: Mapping[str, Any],
    now: Callable[[], datetime],
    check_mode: bool,
    move: Callable[[str, str], None],
    journal: Journal = syslog_daemon,
) -> dict[str, Any]:
    """Load, change and (unless check mode) write the state under the fenced lock, then the
    retirement files and the journal line of the move."""
    colors = check_colors(params.get("colors"))
    files = paths(params["dir"], colors)
    path = files["state"]
    writes = params["action"] != "read"
    if writes and not params.get("token"):
        raise BlueGreenError(
            f"action {params['action']} writes {path} and needs the release lock's token; take "
            f"the lock with release_lock first"
        )
    markers_file = params.get("markers_file")
    if markers_file and not writes:
        raise BlueGreenError(
            "markers_file is written after a change of the record, under the release lock; "
            "action read changes nothing: give it with the write that moves traffic"
        )
    retire, keep = params.get("retire"), params.get("keep")
    if (retire or keep) and not writes:
        raise BlueGreenError(
            "retire and keep change the rollback windows under the release lock; action read "
            "changes nothing: give them with the write that moves traffic"
        )
    for name, color in (("retire", (retire or {}).get("color")), ("keep", keep)):
        if color is not None and color not in colors:
            raise StateError(f"{name}: {color!r} is not one of {', '.join(colors)}")
    lease = None if check_mode else params.get("lease")
    guard = fenced(params["dir"], params["token"], now, lease) if writes else nullcontext()
    markers: dict[str, Any] = {}
    with guard:
        text = read_text(path)
        before = load_state(text, path, params.get("app"), colors)
        after, event = apply_action(before, {**params, "colors": colors}, now())
        changed = event is not None
        if changed and not check_mode:
            write_durably(path, render_state(after), move=move)
        if markers_file:
            markers = write_markers(markers_file, params, colors, after, now(), check_mode, move)
            changed = changed or markers["changed"]
        retired = windows(files["retire"], retire, keep, params, now())
        if retire and not check_mode:
            write_json_durably(files["retire"][retire["color"]], retired["set"], move=move)
        if retired.get("cancelled") and not check_mode:
            os.unlink(files["retire"][str(keep)])
        changed = changed or bool(retired)
    moved = event is not None and params["action"] == "switch"
    if moved and params.get("journal") and not check_mode:
        journal(params["journal"], journal_line(event or {}))
    result: dict[str, Any] = {
        "changed": changed,
        "state": after,
        "exists": bool(text and text.strip()),
        "diff": {
            "before": render_state(before) if text and text.strip() else "",
            "after": render_state(after),
            "before_header": path,
            "after_header": path,
        },
    }
    if event is not None:
        result["event"] = event
    if markers_file:
        result["markers"] = markers
    if retire or keep:
        result["retirement"] = retired
    return result


def windows(
    files: Mapping[str, str],
    retire: Mapping[str, Any] | None,
    keep: str | None,
    params: Mapping[str, Any],
    at: datetime,
) -> dict[str, Any]:
    """What the move does to the rollback windows: the retirement to set, the one to cancel."""
    planned: dict[str, Any] = {}
    if retire:
        if retire["color"] == keep:
            raise StateError(f"retire and keep name the same colour {keep!r}")
        planned["set"] = retirement(
            retire["color"], at, int(retire["window_s"]), params.get("by") or "unknown"
        )
    if keep and os.path.exists(files[keep]):
        planned["cancelled"] = keep
    return planned


def write_markers(
    path: str,
    params: Mapping[str, Any],
    colors: list[str],
    state: Mapping[str, Any],
    at: datetime,
    check_mode: bool,
    move: Callable[[str, str], None],
) -> dict[str, Any]:
    """Write the deploy markers of ``state`` to ``path`` when their text changed."""
    app = params.get("app") or state.get("app")
    if not app:
        raise BlueGreenError(
            f"markers_file {path} needs the app's name for the metrics' names: pass app"
        )
    wanted = render_markers(str(app), colors, state, at)
    changed = read_text(path) != wanted
    if changed and not check_mode:
        try:
            write_durably(path, wanted, mode=0o644, move=move)
        except (BlueGreenError, OSError) as exc:
            raise BlueGreenError(
                f"the record in {params['dir']} was written, but not the deploy markers {path}: "
                f"{exc}. Prometheus' markers name what served before; create node exporter's "
                f"textfile directory (provision the host) and rerun"
            ) from exc
    return {"path": path, "changed": changed}


ARGUMENT_SPEC: dict[str, Any] = {
    "dir": {"type": "path", "required": True},
    "action": {
        "type": "str",
        "choices": ["read", "switch", "mark_bad", "clear_bad", "canary"],
        "default": "read",
    },
    "token": {"type": "str", "no_log": False},
    "app": {"type": "str"},
    "color": {"type": "str"},
    "record": {"type": "dict"},
    "event": {
        "type": "str",
        "choices": [
            "switch",
            "rollback",
            "auto_rollback",
            "repair",
            "canary_start",
            "canary_step",
            "canary_pause",
            "canary_abort",
        ],
    },
    "canary": {"type": "dict"},
    "version": {"type": "str"},
    "reason": {"type": "str", "default": "marked bad by hand"},
    "by": {"type": "str", "default": "unknown"},
    "colors": {"type": "list", "elements": "str", "default": ["blue", "green"]},
    "history_limit": {"type": "int", "default": 50},
    "lease": {"type": "int", "default": 0},
    "retire": {
        "type": "dict",
        "options": {
            "color": {"type": "str", "required": True},
            "window_s": {"type": "int", "required": True},
        },
    },
    "keep": {"type": "str"},
    "journal": {"type": "str"},
    "markers_file": {"type": "path"},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[
            ("action", "switch", ("color", "record", "token")),
            ("action", "mark_bad", ("version", "token")),
            ("action", "clear_bad", ("version", "token")),
            ("action", "canary", ("token",)),
        ],
        supports_check_mode=True,
    )
    if module.params["history_limit"] < 1:
        module.fail_json(
            msg=f"history_limit must be 1 or more, got {module.params['history_limit']}"
        )

    def move(src: str, dest: str) -> None:
        module.atomic_move(src, dest)

    try:
        result = run(module.params, lambda: datetime.now(UTC), module.check_mode, move)
    except BlueGreenError as exc:
        module.fail_json(msg=str(exc), state_dir=module.params["dir"])
    except OSError as exc:
        module.fail_json(
            msg=f"cannot write the state in {module.params['dir']}: {exc}",
            state_dir=module.params["dir"],
        )
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
