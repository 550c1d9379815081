#!/usr/bin/python
# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bluegreen_state
short_description: read and update the blue/green state file of an application
description:
  - Keeps the host-side record of a blue/green application, a JSON file with the active colour,
    the version recorded on each colour, the versions marked bad and a capped history of events.
    The C(bluegreen_plan) and C(bluegreen_rollback_plan) filters read the same file.
  - A missing or empty file means "no release yet"; the first write creates it (mode 0644, atomic
    rename). Its directory must exist.
  - An existing file that is not valid JSON or not a valid state is never overwritten; the module
    fails naming the path and what is wrong, and traffic is not touched.
options:
  path:
    description: The state file, for example C(/var/lib/archibald/<app>/state.json).
    type: path
    required: true
  action:
    description:
      - V(read) returns the state.
      - V(switch) records that traffic now goes to O(color) running O(version) and appends a
        history event (O(event)). Switching to the active colour with the version it already
        runs changes nothing.
      - V(record_version) records the version (and start time) of a colour without switching;
        the active colour's version can only change by a switch.
      - V(mark_bad) lists O(version) in C(bad_versions) with O(reason); V(clear_bad) removes it.
        Both append a history event.
    type: str
    choices: [read, switch, record_version, mark_bad, clear_bad]
    default: read
  app:
    description:
      - Application name, written into a new file. When set, an existing file that names another
        application is refused.
    type: str
  color:
    description: Colour to switch to (V(switch)) or to record a version for (V(record_version)).
    type: str
    aliases: [to]
  version:
    description: Version for V(switch), V(record_version), V(mark_bad) and V(clear_bad).
    type: str
  started_at:
    description:
      - ISO 8601 time the colour's containers started, for V(record_version) (and V(switch) to a
        version not recorded yet). Defaults to now.
    type: str
  event:
    description: History event name of a V(switch).
    type: str
    choices: [switch, rollback, auto_rollback]
    default: switch
  reason:
    description: Why a version is marked bad (V(mark_bad)).
    type: str
    default: marked bad by hand
  by:
    description: Who made the change, for the history (for example V(alice@laptop) or a CI run).
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
- name: Read the release state
  bluegreen_state:
    path: /var/lib/archibald/archibald/state.json
  register: bluegreen_state_now

- name: Record the version started on the target colour
  bluegreen_state:
    path: /var/lib/archibald/archibald/state.json
    app: archibald
    action: record_version
    color: green
    version: "{{ app_version }}"

- name: Record the switch to the target colour
  bluegreen_state:
    path: /var/lib/archibald/archibald/state.json
    app: archibald
    action: switch
    color: green
    version: "{{ app_version }}"
    by: "{{ release_owner }}"

- name: Mark the version bad after an automatic rollback
  bluegreen_state:
    path: /var/lib/archibald/archibald/state.json
    action: mark_bad
    version: "{{ app_version }}"
    reason: error rate above 10 % after the switch
"""

RETURN = r"""
state:
  description: The state after the task (the state that would be written in check mode).
  returned: always
  type: dict
exists:
  description: Whether the state file existed before the task.
  returned: always
  type: bool
event:
  description: The history event appended by this task, if any.
  returned: when an event was appended
  type: dict
  sample: {"at": "2025-01-01T12:00:00Z", "event": "switch", "from": "blue", "to": "green",
           "version": "v2", "previous_version": "v1", "by": "ci run 42"}
"""

import copy
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.basic import AnsibleModule

SCHEMA_VERSION = 1
NOT_TOUCHED = "traffic was not touched"


class StateError(Exception):
    """A problem a person has to act on; the message says what is wrong."""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def empty_state(app: str | None, colors: list[str]) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "app": app,
        "active": None,
        "colors": {c: {"version": None, "started_at": None} for c in colors},
        "switched_at": None,
        "bad_versions": {},
        "history": [],
    }


def validate(state: Any, colors: list[str]) -> list[str]:
    """Return what is wrong with a parsed state (empty when it is valid)."""
    if not isinstance(state, dict):
        return [f"the top level is {type(state).__name__}, expected an object"]
    problems = []
    if state.get("schema") != SCHEMA_VERSION:
        problems.append(f"schema is {state.get('schema')!r}, expected {SCHEMA_VERSION}")
    per_color = state.get("colors")
    if not isinstance(per_color, dict):
        problems.append(f"colors is {per_color!r}, expected an object with {', '.join(colors)}")
    else:
        for name in per_color:
            if name not in colors:
                problems.append(f"colors has unknown colour {name!r}")
        for name in colors:
            entry = per_color.get(name)
            if not isinstance(entry, dict):
                problems.append(f"colors.{name} is {entry!r}, expected an object")
            elif not isinstance(entry.get("version"), (str, type(None))):
                problems.append(f"colors.{name}.version is {entry.get('version')!r}")
    active = state.get("active")
    if active is not None and active not in colors:
        problems.append(f"active is {active!r}, expected one of {', '.join(colors)} or null")
    if not isinstance(state.get("bad_versions", {}), dict):
        problems.append("bad_versions is not an object")
    if not isinstance(state.get("history", []), list):
        problems.append("history is not a list")
    return problems


def load_state(text: str | None, path: str, app: str | None, colors: list[str]) -> dict[str, Any]:
    """Parse the file content (None when missing) into a complete, valid state."""
    if text is None or not text.strip():
        return empty_state(app, colors)
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise StateError(
            f"state file {path} is not valid JSON ({exc}); {NOT_TOUCHED}. Fix the file by hand or "
            f"restore it (its history is the record of releases); an empty file means "
            f"'no release yet'"
        ) from exc
    problems = validate(state, colors)
    if problems:
        raise StateError(
            f"state file {path} is not a valid blue/green state: {'; '.join(problems)}; "
            f"{NOT_TOUCHED}. Fix the file by hand"
        )
    if app and state.get("app") not in (None, app):
        raise StateError(
            f"state file {path} belongs to app {state.get('app')!r}, not {app!r}; {NOT_TOUCHED}"
        )
    state.setdefault("app", app)
    state.setdefault("active", None)
    state.setdefault("switched_at", None)
    state.setdefault("bad_versions", {})
    state.setdefault("history", [])
    if state["app"] is None and app:
        state["app"] = app
    for name in colors:
        state["colors"][name].setdefault("version", None)
        state["colors"][name].setdefault("started_at", None)
    return dict(state)


def _need(params: Mapping[str, Any], *names: str) -> None:
    missing = [n for n in names if not params.get(n)]
    if missing:
        raise StateError(f"action {params['action']} needs {' and '.join(missing)}")


def apply_action(
    state: dict[str, Any], params: Mapping[str, Any], now: datetime
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Return the new state and the history event appended (if any); ``state`` is not modified.

    ``params`` holds the module parameters (action, color, version, started_at, event, reason,
    by, colors, history_limit).
    """
    action = params["action"]
    colors = list(params.get("colors") or ["blue", "green"])
    new = copy.deepcopy(state)
    stamp = iso(now)
    event: dict[str, Any] | None = None
    color = params.get("color")
    version = params.get("version")
    if color is not None and color not in colors:
        raise StateError(f"color {color!r} is not one of {', '.join(colors)}")

    if action == "read":
        return new, None

    if action == "switch":
        _need(params, "color", "version")
        entry = new["colors"][color]
        if new["active"] == color and entry["version"] == version:
            return new, None
        previous = new["active"]
        previous_version = new["colors"][previous]["version"] if previous else None
        if entry["version"] != version:
            entry["started_at"] = params.get("started_at") or stamp
        entry["version"] = version
        new["active"] = color
        new["switched_at"] = stamp
        event = {
            "at": stamp,
            "event": params.get("event") or "switch",
            "from": previous,
            "to": color,
            "version": version,
            "previous_version": previous_version,
            "by": params.get("by") or "unknown",
        }
    elif action == "record_version":
        _need(params, "color", "version")
        entry = new["colors"][color]
        if new["active"] == color and entry["version"] != version:
            raise StateError(
                f"colour {color} is active and serves {entry['version']}; record {version} on it "
                f"with action switch, or record it on the inactive colour"
            )
        started = params.get("started_at")
        if entry["version"] != version:
            entry["version"] = version
            entry["started_at"] = started or stamp
        elif started:
            entry["started_at"] = started
    elif action == "mark_bad":
        _need(params, "version")
        reason = params.get("reason") or "marked bad by hand"
        if new["bad_versions"].get(version, {}).get("reason") == reason:
            return new, None
        new["bad_versions"][version] = {
            "at": stamp,
            "reason": reason,
            "by": params.get("by") or "unknown",
        }
        event = {
            "at": stamp,
            "event": "mark_bad",
            "version": version,
            "reason": reason,
            "by": params.get("by") or "unknown",
        }
    elif action == "clear_bad":
        _need(params, "version")
        if version not in new["bad_versions"]:
            return new, None
        del new["bad_versions"][version]
        event = {
            "at": stamp,
            "event": "clear_bad",
            "version": version,
            "by": params.get("by") or "unknown",
        }
    else:
        raise StateError(f"unknown action {action!r}")

    if event is not None:
        limit = int(params.get("history_limit") or 50)
        new["history"] = [*new["history"], event][-limit:]
    return new, event


def render(state: Mapping[str, Any]) -> str:
    return json.dumps(state, indent=2, sort_keys=True) + "\n"


def read_file(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"cannot read state file {path}: {exc}; {NOT_TOUCHED}") from exc


def write_file(path: str, content: str, move: Callable[[str, str], None]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise StateError(f"directory {directory} for state file {path} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".bluegreen-state-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(tmp, 0o644)
        move(tmp, path)
        os.chmod(path, 0o644)  # atomic_move keeps the old mode or applies the umask
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run(
    params: Mapping[str, Any],
    now: datetime,
    check_mode: bool,
    move: Callable[[str, str], None] = os.replace,
) -> dict[str, Any]:
    """Load, change and (unless check mode) write the state; return the module result."""
    path = params["path"]
    colors = list(params.get("colors") or ["blue", "green"])
    if len(colors) != 2 or colors[0] == colors[1] or not all(colors):
        raise StateError(f"colors must be two distinct colour names, got {colors!r}")
    text = read_file(path)
    before = load_state(text, path, params.get("app"), colors)
    after, event = apply_action(before, params, now)
    changed = after != before
    if changed and not check_mode:
        write_file(path, render(after), move)
    result: dict[str, Any] = {
        "changed": changed,
        "state": after,
        "exists": text is not None,
        "diff": {
            "before": render(before) if text and text.strip() else "",
            "after": render(after) if changed or (text and text.strip()) else "",
            "before_header": path,
            "after_header": path,
        },
    }
    if event is not None:
        result["event"] = event
    return result


ARGUMENT_SPEC: dict[str, Any] = {
    "path": {"type": "path", "required": True},
    "action": {
        "type": "str",
        "choices": ["read", "switch", "record_version", "mark_bad", "clear_bad"],
        "default": "read",
    },
    "app": {"type": "str"},
    "color": {"type": "str", "aliases": ["to"]},
    "version": {"type": "str"},
    "started_at": {"type": "str"},
    "event": {
        "type": "str",
        "choices": ["switch", "rollback", "auto_rollback"],
        "default": "switch",
    },
    "reason": {"type": "str", "default": "marked bad by hand"},
    "by": {"type": "str", "default": "unknown"},
    "colors": {"type": "list", "elements": "str", "default": ["blue", "green"]},
    "history_limit": {"type": "int", "default": 50},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[
            ("action", "switch", ("color", "version")),
            ("action", "record_version", ("color", "version")),
            ("action", "mark_bad", ("version",)),
            ("action", "clear_bad", ("version",)),
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
        result = run(module.params, datetime.now(UTC), module.check_mode, move)
    except StateError as exc:
        module.fail_json(msg=str(exc), state_path=module.params["path"])
    except OSError as exc:
        module.fail_json(
            msg=f"cannot write state file {module.params['path']}: {exc}",
            state_path=module.params["path"],
        )
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
