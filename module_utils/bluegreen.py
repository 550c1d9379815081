# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one owner of a blue/green host's record: files, state, lock, drift and plan.

Everything that reads or writes the host-side record of a release goes
through this file: the modules (``bluegreen_facts``, ``bluegreen_state``,
``bluegreen_switch``, ``release_lock``), the retirement script that the role
installs on the host next to a copy of this file, and the tests. It uses the
Python standard library only, so that it runs on the host without Ansible.

Layout of one app's directory (``<state_dir>/<app>/``)::

    state.json          the record: active colour, per colour what was started, bad versions,
                        history (schema below)
    release.lock        who may change anything now (owner, token, expiry)
    retire-<colour>.json  when the host's timer stops a colour whose rollback window is over
    upstreams-<colour>.conf  nginx's upstream blocks that send everyone to that colour (root
                        only, written by the role's switch), which the host's watchdog switches to
    watchdog.json       the host's watchdog: what it saw last, its last action, its counters

Every function here is pure or takes its clock and its file move as arguments,
so the unit tests drive them directly.
"""

from __future__ import annotations

import copy
import fcntl
import http.client
import json
import os
import secrets
import socket
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

SCHEMA_VERSION = 2
STATE_FILE = "state.json"
LOCK_FILE = "release.lock"
NOT_TOUCHED = "traffic was not touched"
# A colour's record: what the release started there and checked. `config` is
# the hash of the containers' settings; `spec` the settings themselves (secrets
# by reference: each colour keeps its own root-only env file), so that a move
# back recreates a colour as it ran, never with a later run's settings.
COLOR_KEYS = ("version", "digest", "image_id", "config", "started_at", "spec")
# The keys of a colour's `spec` (roles/bluegreen/vars/main.yml builds it).
SPEC_KEYS = ("services", "env", "listen", "volume", "drain", "grace", "restart")
# Keys a spec recorded before they were kept lacks: that colour starts again
# without them (roles/bluegreen/vars/main.yml, _bluegreen_start_hardening).
SPEC_LATER_KEYS = ("hardening",)
EVENTS = (
    "switch",
    "rollback",
    "auto_rollback",
    "repair",
    "mark_bad",
    "clear_bad",
    "canary_start",
    "canary_step",
    "canary_pause",
    "canary_abort",
    # The host's watchdog (roles/bluegreen/files/watchdog.py): traffic moved to the
    # warm colour, or the live colour's containers restarted, when the live colour failed.
    "watchdog_switch",
    "watchdog_restart",
)
# A canary in progress (state["canary"]): the colour and what it runs, the
# share of new clients it gets, where in its steps it is, and whether it waits
# for playbooks/promote.yml. The host keeps it across the end of a run and a
# reboot, so another release is refused until it is promoted or aborted.
CANARY_KEYS = ("color", "version", "digest", "weight", "step", "steps", "paused", "since", "by")
# The request header (and cookie) that pins a client to one side of a canary:
# "always" (the canary) or "never" (the stable colour); nginx ignores it
# outside a canary. The facts ask nginx with "never", so that they see the
# stable colour during a canary. The upstream template names the same header.
PIN_HEADER = "X-Archibald-Canary"
PIN_STABLE = "never"
PIN_CANARY = "always"
# The first line of the upstream file names what it points at; nginx ignores it.
UPSTREAM_MARKER = "# bluegreen-active: "
LABEL = "org.archibald."
REPAIR_HINT = (
    "Repair: `ansible-playbook playbooks/repair.yml -i <inventory>` adopts what nginx really "
    "serves after verifying it through nginx (no traffic moves), then rerun"
)


class BlueGreenError(Exception):
    """A problem a person has to act on; the message says what is wrong and what to do."""


class StateError(BlueGreenError):
    """The state file cannot be used as it is."""


class LockError(BlueGreenError):
    """The release lock is held by someone else, or cannot be used."""


class LockLost(LockError):
    """This run's lock expired or was taken over: it must stop before its next write."""


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


def paths(directory: str, colors: Sequence[str]) -> dict[str, Any]:
    """Every file of one app's directory, by role."""
    return {
        "dir": directory,
        "state": os.path.join(directory, STATE_FILE),
        "lock": os.path.join(directory, LOCK_FILE),
        "retire": {c: os.path.join(directory, f"retire-{c}.json") for c in colors},
    }


def watchdog_blocks_path(directory: str, color: str) -> str:
    """The upstream blocks that send everyone to ``color``, kept for the host's watchdog."""
    return os.path.join(directory, f"upstreams-{color}.conf")


def check_colors(colors: Any) -> list[str]:
    names = list(colors or [])
    if len(names) != 2 or names[0] == names[1] or not all(isinstance(c, str) and c for c in names):
        raise BlueGreenError(f"colors must be two distinct colour names, got {names!r}")
    return names


def other(color: str, colors: Sequence[str]) -> str:
    return colors[1] if color == colors[0] else colors[0]


# --- files -----------------------------------------------------------------


def read_text(path: str) -> str | None:
    """The file's text, None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BlueGreenError(f"cannot read {path}: {exc}; {NOT_TOUCHED}") from exc


def write_durably(
    path: str,
    content: str,
    mode: int = 0o644,
    move: Callable[[str, str], None] = os.replace,
) -> None:
    """Replace ``path`` with ``content`` so that a crash leaves the old or the new file, whole.

    The temporary file is written and fsynced in the same directory, renamed over
    ``path``, then the directory is fsynced so that the rename itself is on disk.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise BlueGreenError(f"directory {directory} for {path} does not exist; provision first")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        move(tmp, path)
        os.chmod(path, mode)  # atomic_move keeps the old mode or applies the umask
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_durably(
    path: str, content: Any, move: Callable[[str, str], None] = os.replace
) -> None:
    write_durably(path, json.dumps(content, indent=2, sort_keys=True) + "\n", move=move)


@contextmanager
def directory_lock(directory: str) -> Iterator[None]:
    """Serialise every change in the app's directory with flock on the directory itself."""
    if not os.path.isdir(directory):
        raise BlueGreenError(f"directory {directory} does not exist; provision the host first")
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_deadline(path: str) -> float | None:
    """A retirement deadline (epoch seconds) from its file; None when there is none."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return float(json.loads(text)["deadline"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BlueGreenError(f"cannot read the retirement deadline in {path}: {exc}") from exc


def retirement(color: str, at: datetime, window_s: int, by: str) -> dict[str, Any]:
    """The retirement file of ``color``: the host's timer stops it after ``deadline``.

    The one owner of the file's format: the role's record of a move (bluegreen_state's
    ``retire``) and the watchdog's switch write it, the retirement script reads it."""
    deadline = int(at.timestamp()) + int(window_s)
    return {
        "color": color,
        "deadline": deadline,
        "deadline_utc": iso(datetime.fromtimestamp(deadline, UTC)),
        "set_by": by,
    }


# --- state -----------------------------------------------------------------


def empty_color() -> dict[str, Any]:
    return dict.fromkeys(COLOR_KEYS)


def empty_state(app: str | None, colors: Sequence[str]) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "app": app,
        "active": None,
        "colors": {c: empty_color() for c in colors},
        "switched_at": None,
        "bad_versions": {},
        "history": [],
        "canary": None,
    }


def check_canary(canary: Any, colors: Sequence[str]) -> list[str]:
    """What is wrong with a canary record (empty when it is valid or null)."""
    if canary is None:
        return []
    if not isinstance(canary, dict):
        return [f"canary is {canary!r}, expected an object or null"]
    problems = [f"canary has unknown key {k!r}" for k in sorted(set(canary) - set(CANARY_KEYS))]
    if canary.get("color") not in colors:
        problems.append(f"canary.color is {canary.get('color')!r}, expected one of {colors}")
    weight = canary.get("weight")
    if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= 100:
        problems.append(f"canary.weight is {weight!r}, expected a whole number 0-100")
    if not isinstance(canary.get("version"), str) or not canary.get("version"):
        problems.append(f"canary.version is {canary.get('version')!r}, expected text")
    if not isinstance(canary.get("step"), int) or not isinstance(canary.get("steps"), list):
        problems.append("canary.step and canary.steps are missing or of the wrong type")
    if not isinstance(canary.get("paused"), bool):
        problems.append(f"canary.paused is {canary.get('paused')!r}, expected true or false")
    return problems


def normalise_canary(canary: Any) -> Any:
    """A canary record as Ansible may pass it (numbers and flags as text) with its real types."""
    if not isinstance(canary, dict):
        return canary
    out = dict(canary)
    for key in ("weight", "step"):
        if isinstance(out.get(key), str) and out[key].strip().isdigit():
            out[key] = int(out[key])
    if isinstance(out.get("paused"), str):
        out["paused"] = out["paused"].strip().lower() in ("true", "yes", "1")
    if isinstance(out.get("steps"), str):
        with suppress(ValueError):
            out["steps"] = json.loads(out["steps"])
    return out


def describe_canary(canary: Mapping[str, Any]) -> str:
    """One sentence for the person on call: what the canary is and where it stands."""
    steps = canary.get("steps") or []
    where = f"step {int(canary.get('step', 0)) + 1} of {len(steps)}" if steps else "a step"
    paused = f", paused since {canary.get('since')}" if canary.get("paused") else ""
    return (
        f"a canary of {canary.get('version')} on {canary.get('color')} is in progress at "
        f"{canary.get('weight')} % of new clients ({where}{paused}, by {canary.get('by')})"
    )


def check_spec(spec: Any, where: str) -> list[str]:
    """What is wrong with a colour's recorded container settings (None: not recorded)."""
    if spec is None:
        return []
    if not isinstance(spec, dict):
        return [f"{where} is {spec!r}, expected an object or null"]
    problems = []
    known = (*SPEC_KEYS, *SPEC_LATER_KEYS)
    unknown = sorted(set(spec) - set(known))
    if unknown:
        problems.append(f"{where} has unknown keys {unknown}, expected {list(known)}")
    missing = sorted(set(SPEC_KEYS) - set(spec))
    if missing:
        problems.append(f"{where} lacks {missing}")
    return problems


def validate(state: Any, colors: Sequence[str]) -> list[str]:
    """What is wrong with a parsed state (empty when it is valid)."""
    if not isinstance(state, dict):
        return [f"the top level is {type(state).__name__}, expected an object"]
    problems = []
    if state.get("schema") not in (1, SCHEMA_VERSION):
        problems.append(f"schema is {state.get('schema')!r}, expected {SCHEMA_VERSION}")
    per_color = state.get("colors")
    if not isinstance(per_color, dict):
        problems.append(f"colors is {per_color!r}, expected an object with {', '.join(colors)}")
    else:
        problems += [
            f"colors has unknown colour {name!r}" for name in per_color if name not in colors
        ]
        for name in colors:
            entry = per_color.get(name)
            if not isinstance(entry, dict):
                problems.append(f"colors.{name} is {entry!r}, expected an object")
                continue
            for key in COLOR_KEYS:
                if key == "spec":
                    problems += check_spec(entry.get(key), f"colors.{name}.spec")
                elif not isinstance(entry.get(key), (str, type(None))):
                    problems.append(f"colors.{name}.{key} is {entry.get(key)!r}, expected text")
    active = state.get("active")
    if active is not None and active not in colors:
        problems.append(f"active is {active!r}, expected one of {', '.join(colors)} or null")
    if not isinstance(state.get("bad_versions", {}), dict):
        problems.append("bad_versions is not an object")
    if not isinstance(state.get("history", []), list):
        problems.append("history is not a list")
    problems += check_canary(state.get("canary"), colors)
    return problems


def load_state(
    text: str | None, path: str, app: str | None, colors: Sequence[str]
) -> dict[str, Any]:
    """Parse a state file's text (None when missing) into a complete state of this schema.

    A missing or empty file is "no release yet"; whether that is true is for the
    caller to check against what runs (see ``drift``). Schema 1 files are read
    and upgraded (their colours have no digest, image or config recorded).
    """
    if text is None or not text.strip():
        return empty_state(app, colors)
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise StateError(
            f"state file {path} is not valid JSON ({exc}); {NOT_TOUCHED}. Restore it from a "
            f"backup, or move it aside and run playbooks/repair.yml, which records what nginx "
            f"serves"
        ) from exc
    problems = validate(state, colors)
    if problems:
        raise StateError(
            f"state file {path} is not a valid blue/green state: {'; '.join(problems)}; "
            f"{NOT_TOUCHED}. Fix the file by hand, or move it aside and run playbooks/repair.yml"
        )
    if app and state.get("app") not in (None, app):
        raise StateError(
            f"state file {path} belongs to app {state.get('app')!r}, not {app!r}; {NOT_TOUCHED}"
        )
    full = empty_state(app, colors)
    for key in ("active", "switched_at", "bad_versions", "history", "canary"):
        if state.get(key) is not None:
            full[key] = state[key]
    if state.get("app"):
        full["app"] = state["app"]
    for name in colors:
        full["colors"][name].update(
            {k: v for k, v in state["colors"][name].items() if k in COLOR_KEYS}
        )
    return full


def render_state(state: Mapping[str, Any]) -> str:
    return json.dumps(state, indent=2, sort_keys=True) + "\n"


def check_record(record: Any) -> dict[str, Any]:
    """A colour's record as an action passes it, checked: its keys and its spec."""
    record = dict(record or {})
    unknown = sorted(set(record) - set(COLOR_KEYS))
    problems = []
    if unknown:
        problems.append(f"record has unknown keys {unknown}; expected {list(COLOR_KEYS)}")
    problems += check_spec(record.get("spec"), "record.spec")
    if problems:
        raise StateError("; ".join(problems))
    return record


def apply_action(
    state: dict[str, Any], params: Mapping[str, Any], now: datetime
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The new state and the history event appended (if any); ``state`` is not modified.

    Actions: ``switch`` records that traffic now goes to ``color`` running what
    ``record`` describes (version, digest, image_id, config, started_at, spec), with the
    history event ``event`` (switch, rollback, auto_rollback or repair);
    ``mark_bad`` / ``clear_bad`` list or unlist ``version`` in bad_versions;
    ``canary`` sets the canary in progress to ``canary`` (null ends it) with the
    history event ``event`` (canary_start, canary_step, canary_pause,
    canary_abort), recording ``record`` for the canary's colour when given. A
    switch ends any canary: the colour it switched to serves everyone.
    """
    action = params["action"]
    colors = check_colors(params.get("colors") or ("blue", "green"))
    new = copy.deepcopy(state)
    stamp = iso(now)
    by = params.get("by") or "unknown"
    event: dict[str, Any] | None = None
    color = params.get("color")
    if color is not None and color not in colors:
        raise StateError(f"color {color!r} is not one of {', '.join(colors)}")

    if action == "read":
        return new, None
    if action == "switch":
        record = check_record(params.get("record"))
        version = record.get("version")
        if not color or not version:
            raise StateError("action switch needs color and record.version")
        entry = new["colors"][color]
        wanted = {**entry, **record}
        if wanted.get("started_at") is None:
            wanted["started_at"] = stamp
        if (
            new["active"] == color
            and all(entry.get(k) == wanted.get(k) for k in COLOR_KEYS)
            and not new.get("canary")
        ):
            return new, None
        previous = new["active"]
        previous_version = new["colors"][previous]["version"] if previous else None
        new["colors"][color] = wanted
        new["active"] = color
        new["switched_at"] = stamp
        new["canary"] = None
        event = {
            "at": stamp,
            "event": params.get("event") or "switch",
            "from": previous,
            "to": color,
            "version": version,
            "digest": wanted.get("digest"),
            "previous_version": previous_version,
            "by": by,
        }
    elif action == "mark_bad":
        version = params.get("version")
        if not version:
            raise StateError("action mark_bad needs version")
        reason = params.get("reason") or "marked bad by hand"
        if new["bad_versions"].get(version, {}).get("reason") == reason:
            return new, None
        new["bad_versions"][version] = {"at": stamp, "reason": reason, "by": by}
        event = {"at": stamp, "event": "mark_bad", "version": version, "reason": reason, "by": by}
    elif action == "clear_bad":
        version = params.get("version")
        if not version:
            raise StateError("action clear_bad needs version")
        if version not in new["bad_versions"]:
            return new, None
        del new["bad_versions"][version]
        event = {"at": stamp, "event": "clear_bad", "version": version, "by": by}
    elif action == "canary":
        canary = normalise_canary(params.get("canary"))
        problems = check_canary(canary, colors)
        if problems:
            raise StateError("action canary: " + "; ".join(problems))
        record = check_record(params.get("record"))
        if canary is not None and canary["color"] == new["active"]:
            raise StateError(f"the canary's colour {canary['color']} is the active colour")
        if record and canary is not None:
            new["colors"][canary["color"]] = {**new["colors"][canary["color"]], **record}
        if new.get("canary") == canary and new["colors"] == state["colors"]:
            return new, None
        ended = canary is None
        about = canary if canary is not None else (new.get("canary") or {})
        new["canary"] = canary
        event = {
            "at": stamp,
            "event": params.get("event") or ("canary_abort" if ended else "canary_step"),
            "color": about.get("color"),
            "version": about.get("version"),
            "weight": 0 if ended else about.get("weight"),
            "step": about.get("step"),
            "by": by,
        }
        if ended and params.get("reason"):
            event["reason"] = params["reason"]
    else:
        raise StateError(f"unknown action {action!r}")

    return append_event(new, event, int(params.get("history_limit") or 50)), event


def append_event(
    state: dict[str, Any], event: Mapping[str, Any], limit: int = 50
) -> dict[str, Any]:
    """``state`` with ``event`` appended to its history, which keeps the last ``limit`` events."""
    return {**state, "history": [*(state.get("history") or []), dict(event)][-limit:]}


# --- lock ------------------------------------------------------------------


def new_token() -> str:
    return secrets.token_hex(8)


def parse_lock(text: str | None) -> dict[str, Any] | None:
    """Parse lock file content; None when there is none. Bad content gives {"unreadable": why}."""
    if text is None or not text.strip():
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


def is_expired(lock: Mapping[str, Any], now: datetime) -> bool:
    expires = parse_iso(lock.get("expires_at"))
    return expires is not None and expires <= now


def _since(moment: Any, now: datetime | None) -> str:
    """`` (in N s)`` or `` (N s ago)`` for an ISO time, empty without ``now``."""
    when = parse_iso(moment)
    if now is None or when is None:
        return ""
    seconds = round((when - now).total_seconds())
    return f" (in {seconds} s)" if seconds > 0 else f" ({-seconds} s ago)"


def describe_lock(path: str, lock: Mapping[str, Any], now: datetime | None = None) -> str:
    """Who holds the lock, since when, when it was last renewed and when it expires."""
    if "unreadable" in lock:
        return f"release lock {path} exists but cannot be read ({lock['unreadable']})"
    renewed = lock.get("renewed_at")
    return (
        f"release lock {path} is held by {lock['owner']} since {lock.get('acquired_at')}, "
        + (
            f"last renewed {renewed}{_since(renewed, now)}"
            if renewed
            else "last renewed: not recorded"
        )
        + f", expires {lock.get('expires_at')}{_since(lock.get('expires_at'), now)}"
    )


def plan_acquire(
    path: str,
    current: Mapping[str, Any] | None,
    owner: str,
    ttl: int,
    now: datetime,
    token: str | None = None,
    force: bool = False,
    take_over_from: str = "",
) -> tuple[str, dict[str, Any], Mapping[str, Any] | None]:
    """Decide how to take or refresh the lock: (action, new lock, lock taken over or None).

    Without ``token`` this takes a free or expired lock with a new token; a lock
    taken over records how (``taken``: expired, forced or own run, from whom),
    so that the run that lost it is told. ``take_over_from`` (a CI run's
    clean-up: "(CI run 42)") also takes a live lock whose owner names that
    run: a cancelled ansible-playbook runs no `always:` and leaves its lock
    held, and the same run's rollback or abort starts after it has ended. With
    ``token`` it refreshes the lock this run holds (``renewed_at``), and raises
    LockLost when the lock is no longer this run's: that run must stop before
    its next write.
    """
    expires = iso(now + timedelta(seconds=ttl))
    if token is not None:
        check_held(path, current, token, now)
        assert current is not None  # check_held raised otherwise
        return "refreshed", {**current, "renewed_at": iso(now), "expires_at": expires}, None
    fresh: dict[str, Any] = {
        "owner": owner,
        "token": new_token(),
        "acquired_at": iso(now),
        "renewed_at": iso(now),
        "expires_at": expires,
    }
    if current is None:
        return "created", fresh, None
    expired = "unreadable" not in current and is_expired(current, now)
    own = (
        bool(take_over_from)
        and "unreadable" not in current
        and take_over_from in str(current.get("owner") or "")
    )
    if force or expired or own:
        fresh["taken"] = {
            "how": "expired" if expired else "forced" if force else "own run",
            "from": current.get("owner"),
            "token": current.get("token"),
            "expired_at": current.get("expires_at"),
            "at": iso(now),
        }
        return "took_over", fresh, current
    raise LockError(
        f"{describe_lock(path, current, now)}. Another release, rollback, repair or the "
        f"retirement timer holds it, or a run that was killed left it: its lease then expires "
        f"at most bluegreen_lock_ttl_s after its last renewal. Wait: the lock is taken as soon "
        f"as its holder gives it back or it expires. If you know the holder is gone (no CD run "
        f"in progress; playbooks/status.yml shows the lock and any drift), take it over now "
        f"with -e bluegreen_lock_force=true"
    )


def check_held(path: str, current: Mapping[str, Any] | None, token: str, now: datetime) -> None:
    """Raise LockLost unless the lock at ``path`` is held with ``token`` and has not expired.

    The message says what happened: the lock is gone, it expired and another
    run took it over, another run took it over by force, or it expired.
    """
    stopped = "This run stopped before its next write"
    if current is None:
        raise LockLost(
            f"this run's release lock {path} is gone: it was removed by hand, or a run that "
            f"took it over (after it expired, or with bluegreen_lock_force) has finished and "
            f"given it back. {stopped}. Look at what the host serves with playbooks/status.yml "
            f"before rerunning"
        )
    if current.get("token") != token:
        recorded = current.get("taken")
        taken: Mapping[str, Any] = recorded if isinstance(recorded, Mapping) else {}
        holder = describe_lock(path, current, now)
        # How this run's own lock was taken over, if the record names it.
        how = taken.get("how") if taken.get("token") == token else None
        if how == "expired":
            raise LockLost(
                f"this run's release lock {path} expired at {taken.get('expired_at')} and was "
                f"taken over at {taken.get('at')} by {current.get('owner')} ({holder}). {stopped}; "
                f"the holder now decides what the host serves. Raise bluegreen_lock_ttl_s if a "
                f"step legitimately takes that long"
            )
        if how == "forced":
            raise LockLost(
                f"this run's release lock {path} was taken over at {taken.get('at')} by a forced "
                f"run (bluegreen_lock_force) of {current.get('owner')}, before it expired "
                f"({taken.get('expired_at')}). {stopped}; the holder now decides what the host "
                f"serves"
            )
        if how == "own run":
            raise LockLost(
                f"this run's release lock {path} was taken over at {taken.get('at')} by the "
                f"clean-up of the same CI run ({current.get('owner')}), which runs after the run "
                f"was cancelled or failed. {stopped}; the clean-up now decides what the host "
                f"serves"
            )
        raise LockLost(
            f"this run's release lock was taken over: {holder}. {stopped}; the holder now "
            f"decides what the host serves"
        )
    if is_expired(current, now):
        raise LockLost(
            f"this run's release lock {path} expired at {current.get('expires_at')}; {stopped}, "
            f"since another run may have taken it. Raise bluegreen_lock_ttl_s if a step "
            f"legitimately takes that long"
        )


def plan_release(
    path: str, current: Mapping[str, Any] | None, token: str | None, force: bool, now: datetime
) -> tuple[str, Mapping[str, Any] | None]:
    """Decide how to give the lock back: (action, lock removed on someone else's behalf)."""
    if current is None:
        return "none", None
    mine = token is not None and current.get("token") == token
    if mine:
        return "released", None
    if force or ("unreadable" not in current and is_expired(current, now)):
        return "released", current
    if token is not None:
        # Ours was taken over: leave the new holder's lock alone.
        return "none", None
    raise LockError(f"cannot release: {describe_lock(path, current)}; pass its token or force")


@contextmanager
def fenced(
    directory: str, token: str, now: Callable[[], datetime], lease_s: int | None = None
) -> Iterator[dict[str, Any]]:
    """Hold the directory flock and check that ``token`` still holds the release lock.

    Every write of the record, of nginx's upstream file and every reload happens
    inside this, so a run whose lock was taken over cannot write anything. With
    ``lease_s`` the lock's lease is renewed for that long from now first: every
    write is also a heartbeat.
    """
    lock_path = os.path.join(directory, LOCK_FILE)
    with directory_lock(directory):
        current = parse_lock(read_text(lock_path))
        check_held(lock_path, current, token, now())
        assert current is not None
        if lease_s:
            moment = now()
            current = {
                **current,
                "renewed_at": iso(moment),
                "expires_at": iso(moment + timedelta(seconds=lease_s)),
            }
            write_json_durably(lock_path, current)
        yield dict(current)


# --- upstream marker -------------------------------------------------------


def render_marker(
    color: str, version: str, digest: str | None, canary: Mapping[str, Any] | None = None
) -> str:
    """The marker line; ``canary`` (color, version, weight) when a share goes to a canary."""
    marker: dict[str, Any] = {"color": color, "version": version, "digest": digest}
    if canary:
        marker["canary"] = {k: canary.get(k) for k in ("color", "version", "weight")}
    return UPSTREAM_MARKER + json.dumps(marker, sort_keys=True)


def parse_marker(text: str | None) -> dict[str, Any] | None:
    """What a release wrote into the upstream file; None for a file no release wrote."""
    for line in (text or "").splitlines():
        if line.startswith(UPSTREAM_MARKER):
            try:
                found = json.loads(line[len(UPSTREAM_MARKER) :])
            except ValueError:
                return {"color": None, "unreadable": line}
            return found if isinstance(found, dict) else {"color": None, "unreadable": line}
    return None


def upstream_text(
    color: str,
    version: str,
    digest: str | None,
    content: str,
    canary: Mapping[str, Any] | None = None,
) -> str:
    """The whole upstream file: the marker line, then the upstream blocks ``content``."""
    return render_marker(color, version, digest, canary) + "\n" + content.rstrip("\n") + "\n"


Runner = Callable[[list[str]], tuple[int, str, str]]


def switch_upstreams(
    directory: str,
    token: str,
    path: str,
    wanted: str,
    *,
    color: str,
    version: str,
    now: Callable[[], datetime],
    command: Runner,
    test_command: Sequence[str] = ("nginx", "-t"),
    reload_command: Sequence[str] = ("systemctl", "reload", "nginx"),
    reload: bool = False,
    check_mode: bool = False,
    lease_s: int | None = None,
    move: Callable[[str, str], None] = os.replace,
) -> dict[str, Any]:
    """Write nginx's upstream file ``wanted`` (``upstream_text``), test nginx and reload it.

    Fenced by ``token`` (see ``fenced``): the file never stays written without the
    reload that loads it. When the test or the reload fails, the previous file is
    put back and BlueGreenError says so. Returns changed, reloaded and the diff.
    """
    with fenced(directory, token, now, None if check_mode else lease_s):
        before = read_text(path)
        changed = before != wanted
        diff = {
            "before": before or "",
            "after": wanted,
            "before_header": path,
            "after_header": path,
        }
        if check_mode or not (changed or reload):
            return {"changed": changed, "reloaded": False, "diff": diff}
        if changed:
            write_durably(path, wanted, move=move)
        steps = (
            (
                test_command,
                "nginx refused the switch to {color} ({version}): {why}. The "
                "previous upstream file was put back and nginx was not reloaded, so traffic still "
                "goes where it went. Fix the configuration (`nginx -t` on the host) and rerun",
            ),
            (
                reload_command,
                "nginx did not reload: {why}. The previous upstream file was put "
                "back; check `systemctl status nginx` on the host",
            ),
        )
        for argv, failure in steps:
            rc, out, err = command(list(argv))
            if rc != 0:
                if changed and before is not None:
                    write_durably(path, before, move=move)
                raise BlueGreenError(
                    failure.format(color=color, version=version, why=(err or out).strip())
                )
    return {"changed": True, "reloaded": True, "diff": diff}


# --- deploy markers --------------------------------------------------------

# The history events that move traffic: the deploy markers' switch time is the
# last of them (a restart by the watchdog, a pause or a bad mark moves nothing).
TRAFFIC_EVENTS = (
    "switch",
    "rollback",
    "auto_rollback",
    "repair",
    "canary_start",
    "canary_step",
    "canary_abort",
    "watchdog_switch",
)
# What the markers count as releases rolled back by a gate.
ROLLBACK_EVENTS = ("auto_rollback", "canary_abort")


def markers_path(textfile_dir: str, app: str) -> str:
    """The deploy markers' file in node exporter's textfile directory."""
    return os.path.join(textfile_dir, f"{app}_deploy.prom")


def _label(value: Any) -> str:
    """A label value in Prometheus' text format (backslash, quote and newline escaped)."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def switch_moment(state: Mapping[str, Any], now: datetime) -> datetime:
    """When traffic last moved: the last such event of the history, else ``switched_at``,
    else ``now``. Rewriting the markers without a move keeps it."""
    for event in reversed(state.get("history") or []):
        if isinstance(event, Mapping) and event.get("event") in TRAFFIC_EVENTS:
            moment = parse_iso(event.get("at"))
            if moment is not None:
                return moment
    return parse_iso(state.get("switched_at")) or now


def render_markers(app: str, colors: Sequence[str], state: Mapping[str, Any], now: datetime) -> str:
    """Prometheus' deploy markers (node exporter's textfile collector) for a state.

    The one owner of their text: the role writes it after each move of traffic
    (bluegreen_state's ``markers_file``) and the host's watchdog after its own
    switch. Which colour serves which version, when traffic last moved (see
    ``switch_moment``; ``now`` only when the record names no move), the releases
    rolled back by a gate, and each colour's share of clients (a canary's weight).
    """
    active = state.get("active")
    canary = state.get("canary") or {}
    weight = int(canary.get("weight") or 0)
    rollbacks = sum(
        1
        for event in state.get("history") or []
        if isinstance(event, Mapping) and event.get("event") in ROLLBACK_EVENTS
    )
    version = ((state.get("colors") or {}).get(active) or {}).get("version")
    lines = [
        f"# Written by the release engine and the host's watchdog "
        f"(module_utils/bluegreen.py render_markers); {app}'s record is state.json.",
        f"# HELP {app}_deploy_info The colour serving traffic and its version.",
        f"# TYPE {app}_deploy_info gauge",
    ]
    if active is not None:
        lines.append(f'{app}_deploy_info{{color="{_label(active)}",version="{_label(version)}"}} 1')
    lines += [
        f"# HELP {app}_deploy_switch_timestamp_seconds When traffic last moved (a switch, "
        f"a canary step, an abort).",
        f"# TYPE {app}_deploy_switch_timestamp_seconds gauge",
        f"{app}_deploy_switch_timestamp_seconds {int(switch_moment(state, now).timestamp())}",
        f"# HELP {app}_deploy_auto_rollbacks_total Releases rolled back by the metric gate.",
        f"# TYPE {app}_deploy_auto_rollbacks_total counter",
        f"{app}_deploy_auto_rollbacks_total {rollbacks}",
        f"# HELP {app}_traffic_weight_percent Share of clients each colour gets (a canary's "
        f"step, else 100 and 0).",
        f"# TYPE {app}_traffic_weight_percent gauge",
    ]
    for color in colors:
        if canary and color == canary.get("color"):
            share = weight
        elif color == active:
            share = 100 - weight
        else:
            share = 0
        lines.append(f'{app}_traffic_weight_percent{{color="{_label(color)}"}} {share}')
    return "\n".join(lines) + "\n"


# --- images ----------------------------------------------------------------


def plan_prune(
    images: Sequence[Mapping[str, Any]], state: Mapping[str, Any], keep_versions: int
) -> tuple[list[str], list[str]]:
    """(image IDs to remove, image IDs kept) of the app's local images.

    ``images``: one entry per image ID, ``{"id", "tags": [...], "digests": [...]}``.
    Kept: what a colour records (its image ID, digest or version tag), and the
    images of the last ``keep_versions`` distinct versions the history names,
    newest first (a rollback target stays on disk). ``keep_versions`` below 1
    keeps everything. Only the app's repository is ever given here.
    """
    if keep_versions < 1:
        return [], [str(i["id"]) for i in images]
    keep_ids, keep_digests, keep_tags = set(), set(), set()
    for entry in (state.get("colors") or {}).values():
        keep_ids.add(entry.get("image_id"))
        keep_digests.add(entry.get("digest"))
        keep_tags.add(entry.get("version"))
    seen: list[str] = []
    for event in reversed(state.get("history") or []):
        version = event.get("version")
        if event.get("event") == "mark_bad" or not version or version in seen:
            continue
        if len(seen) >= keep_versions:
            break
        seen.append(version)
        keep_tags.add(version)
        keep_digests.add(event.get("digest"))
    keep_ids.discard(None)
    keep_digests.discard(None)
    keep_tags.discard(None)
    remove: list[str] = []
    kept: list[str] = []
    for image in images:
        wanted = (
            image["id"] in keep_ids
            or keep_digests & set(image.get("digests") or [])
            or keep_tags & set(image.get("tags") or [])
        )
        (kept if wanted else remove).append(str(image["id"]))
    return remove, kept


# --- observation -----------------------------------------------------------


def summarize_container(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of one container that the engine uses.

    ``doc`` is a ``docker inspect`` document or an entry of the container list
    (``docker ps``, community.docker.docker_host_info with verbose_output); the
    list has no restart count or start time, which are then null.
    """
    if "Config" in doc:
        config = doc.get("Config") or {}
        labels = config.get("Labels") or {}
        state = doc.get("State") or {}
        name = str(doc.get("Name", ""))
        image, image_id = config.get("Image"), doc.get("Image")
        running, restarting = bool(state.get("Running")), bool(state.get("Restarting"))
        restarts: int | None = int(doc.get("RestartCount") or 0)
        started, exit_code = state.get("StartedAt"), state.get("ExitCode")
    else:
        labels = doc.get("Labels") or {}
        name = str((doc.get("Names") or [""])[0])
        image, image_id = doc.get("Image"), doc.get("ImageID")
        running, restarting = doc.get("State") == "running", doc.get("State") == "restarting"
        restarts, started, exit_code = None, None, None
    return {
        "name": name.lstrip("/"),
        "color": labels.get(LABEL + "color"),
        "service": labels.get(LABEL + "service"),
        "version": labels.get(LABEL + "version"),
        "digest": labels.get(LABEL + "digest"),
        "config": labels.get(LABEL + "config"),
        "image": image,
        "image_id": image_id,
        "running": running,
        "restarting": restarting,
        "restart_count": restarts,
        "started_at": started,
        "exit_code": exit_code,
    }


# --- the Docker engine, read-only ------------------------------------------


class DockerSocket(http.client.HTTPConnection):
    """HTTP to the Docker engine's API on its Unix socket (standard library only)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def docker_get(socket_path: str, url: str, timeout: float) -> Any:
    """GET ``url`` from the Docker engine's API; its JSON, or OSError naming the answer."""
    connection = DockerSocket(socket_path, timeout)
    try:
        connection.request("GET", url)
        answer = connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise OSError(f"Docker answered {url} with HTTP {answer.status}: {body[:200]!r}")
        return json.loads(body)
    finally:
        connection.close()


def docker_listed(
    socket_path: str, app: str, timeout: float, color: str | None = None
) -> list[dict[str, Any]]:
    """The app's containers (of one colour, if given) as Docker's container list
    gives them: labels, image, state; no environment, which holds the env file's
    secrets."""
    labels = [f"{LABEL}app={app}"] + ([f"{LABEL}color={color}"] if color else [])
    query = urllib.parse.quote(json.dumps({"label": labels}))
    listed: list[dict[str, Any]] = docker_get(
        socket_path, f"/containers/json?all=1&filters={query}", timeout
    )
    return listed


def docker_inspected(socket_path: str, name: str, timeout: float) -> dict[str, Any]:
    """One container as ``summarize_container`` sees it, with its restart count."""
    quoted = urllib.parse.quote(name, safe="")
    return summarize_container(docker_get(socket_path, f"/containers/{quoted}/json", timeout))


def docker_containers(
    socket_path: str, app: str, color: str, timeout: float
) -> list[dict[str, Any]]:
    """The colour's containers as bluegreen.summarize_container sees them (with restart counts)."""
    return [
        docker_inspected(socket_path, c["Id"], timeout)
        for c in docker_listed(socket_path, app, timeout, color)
    ]


def colors_of(
    containers: Sequence[Mapping[str, Any]], colors: Sequence[str], services: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per colour: its containers by service, whether all run, and their common labels."""
    out: dict[str, dict[str, Any]] = {}
    for color in colors:
        mine = {c["service"]: c for c in containers if c.get("color") == color}
        running = [s for s in services if mine.get(s, {}).get("running")]
        versions = {c.get("version") for c in mine.values()}
        image_ids = {c.get("image_id") for c in mine.values()}
        configs = {c.get("config") for c in mine.values()}
        out[color] = {
            "services": mine,
            "running": len(running) == len(services),
            "any_running": bool(running),
            "version": versions.pop() if len(versions) == 1 else None,
            "image_id": image_ids.pop() if len(image_ids) == 1 else None,
            "config": configs.pop() if len(configs) == 1 else None,
            "restarting": any(c.get("restarting") for c in mine.values()),
        }
    return out


def drift(
    state: Mapping[str, Any],
    upstream: Mapping[str, Any] | None,
    edge: Mapping[str, Any],
    per_color: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """Where the record, the upstream file, nginx's answers and the containers disagree.

    Each entry is a sentence for the person on call. ``edge`` is what nginx
    answered on the health path (``color`` and ``version`` when it answered).
    """
    found: list[str] = []
    active = state.get("active")
    served = edge.get("color")
    file_color = (upstream or {}).get("color")
    running = sorted(c for c, facts in per_color.items() if facts.get("any_running"))
    if active is None:
        if running:
            found.append(
                f"state.json records no release (missing or empty) but containers of "
                f"{' and '.join(running)} are running"
                + (f" and nginx serves {served} ({edge.get('version')})" if served else "")
                + "; a release now would plan from nothing and could recreate a serving colour"
            )
        elif upstream is not None:
            found.append(
                f"state.json records no release but the upstream file was written by a release "
                f"for {file_color}"
            )
        return found
    if served and served != active:
        found.append(
            f"nginx serves {served} ({edge.get('version')}) but state.json says {active} is "
            f"active: a run stopped between the switch and the record"
        )
    if upstream is not None and file_color != active:
        if served and served != file_color:
            found.append(
                f"the upstream file points at {file_color} but nginx serves {served}: a run "
                f"stopped between writing the file and reloading nginx, and the next reload "
                f"(certbot, a provision run) would move traffic to {file_color}, which was "
                f"never verified"
            )
        elif not served:
            found.append(f"the upstream file points at {file_color} but state.json says {active}")
    recorded = state["colors"][active]
    facts = per_color.get(active, {})
    if facts.get("any_running"):
        if facts.get("version") and recorded.get("version") != facts.get("version"):
            found.append(
                f"the containers of {active} run version {facts.get('version')} but state.json "
                f"records {recorded.get('version')}"
            )
        if (
            recorded.get("image_id")
            and facts.get("image_id")
            and recorded.get("image_id") != facts.get("image_id")
        ):
            found.append(
                f"the containers of {active} run image {facts.get('image_id')} but state.json "
                f"records {recorded.get('image_id')} for {recorded.get('version')}"
            )
    if served and edge.get("version") and served == active:  # noqa: SIM102 one rule, one test
        if recorded.get("version") != edge.get("version"):
            found.append(
                f"nginx serves {active} with version {edge.get('version')} but state.json "
                f"records {recorded.get('version')}"
            )
    return found + canary_drift(state.get("canary"), upstream, per_color)


def canary_drift(
    canary: Mapping[str, Any] | None,
    upstream: Mapping[str, Any] | None,
    per_color: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """Where a canary's record and the upstream file or its containers disagree."""
    in_file = (upstream or {}).get("canary") or None
    if upstream is None or upstream.get("unreadable"):
        return []
    if canary is None:
        if in_file and in_file.get("weight"):
            return [
                f"the upstream file sends {in_file.get('weight')} % to a canary on "
                f"{in_file.get('color')} ({in_file.get('version')}) but state.json records no "
                f"canary: a run stopped between the reload and the record"
            ]
        return []
    found = []
    want = (canary.get("color"), canary.get("version"), canary.get("weight"))
    have = tuple((in_file or {}).get(k) for k in ("color", "version", "weight"))
    if want != have:
        found.append(
            f"state.json records {describe_canary(canary)} but the upstream file sends "
            + (f"{have[2]} % to {have[0]} ({have[1]})" if in_file else "nothing to a canary")
        )
    if not per_color.get(str(canary.get("color")), {}).get("running"):
        found.append(
            f"the canary's containers on {canary.get('color')} are not all running, yet "
            f"{canary.get('weight')} % of new clients are sent there"
        )
    return found


# --- plan ------------------------------------------------------------------


def _refuse(why: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "refuse", "why": why, **extra}


def plan(
    state: Mapping[str, Any],
    found_drift: Sequence[str],
    per_color: Mapping[str, Mapping[str, Any]],
    request: Mapping[str, Any],
    colors: Sequence[str],
) -> dict[str, Any]:
    """Decide what a release, rollback or repair does, from the observed host.

    One vocabulary for all: ``kind`` (release, rollback, repair, promote, abort,
    noop, refuse), and for promote and abort ``canary``, the canary in progress;
    ``from_color``/``from_version`` (what serves now), ``to_color``/``to_version``/
    ``to_digest``/``to_image_id`` (what will serve), ``why``.
    """
    action = request.get("action") or "none"
    force = bool(request.get("force"))
    active = state.get("active")
    bad = state.get("bad_versions") or {}
    current = {
        "from_color": active,
        "from_version": state["colors"][active]["version"] if active else None,
        "from_digest": state["colors"][active]["digest"] if active else None,
    }
    if action == "none":
        return {"kind": "noop", "why": "nothing was asked", **current}
    canary: Mapping[str, Any] = state.get("canary") or {}
    if action in ("promote", "abort") and not canary:
        return {
            "kind": "noop",
            "why": f"no canary is in progress: nothing to {action}",
            **current,
        }
    if action == "abort":
        # The way out: allowed with drift, since it only sends everyone to the
        # colour that served before the canary began.
        if not per_color.get(str(active), {}).get("running"):
            return _refuse(
                f"cannot abort {describe_canary(canary)}: the stable colour {active} is not "
                f"all running, so there is nowhere safe to send its share. {REPAIR_HINT}",
                **current,
            )
        return {
            "kind": "abort",
            "why": f"abort {describe_canary(canary)}; everyone back to {active}",
            **current,
            **_canary_target(state, canary),
        }
    if canary and action in ("release", "rollback", "repair"):
        return _refuse(
            f"{describe_canary(canary)}. Finish it first: `ansible-playbook "
            f"playbooks/promote.yml -i <inventory>` continues it, `ansible-playbook "
            f"playbooks/abort.yml -i <inventory>` sends everyone back to {active}. "
            f"Nothing was changed",
            **current,
        )
    if action == "repair":
        if not found_drift:
            return {"kind": "noop", "why": "the host is consistent: nothing to repair", **current}
        return {"kind": "repair", "why": "; ".join(found_drift), **current}
    if found_drift:
        return _refuse(
            "the host does not match its record: " + "; ".join(found_drift) + ". Nothing was "
            f"changed. {REPAIR_HINT}",
            **current,
        )

    def refuse_bad(version: str) -> dict[str, Any] | None:
        entry = bad.get(version)
        if entry is None or force:
            return None
        return _refuse(
            f"version {version} is listed in bad_versions (marked bad at {entry.get('at')} by "
            f"{entry.get('by')}: {entry.get('reason')}); refusing it. Deploy another version, or "
            f"pass -e app_force=true to deploy it anyway",
            **current,
        )

    if action == "promote":
        expected = request.get("version")
        if expected and expected != canary.get("version"):
            # An approval given for one release must not continue another's canary
            # (a stale promote job after a newer deploy started its own).
            return _refuse(
                f"{describe_canary(canary)}, not of {expected}: this promotion was asked for "
                f"{expected} and refuses to continue another release's canary. Nothing was "
                f"changed. Promote without app_version to continue the canary on the host, "
                f"or abort it (playbooks/abort.yml)",
                **current,
            )
        refused = refuse_bad(str(canary.get("version")))
        if refused:
            return refused
        return {
            "kind": "promote",
            "why": f"continue {describe_canary(canary)}",
            **current,
            **_canary_target(state, canary),
        }

    if action == "rollback":
        if active is None:
            return _refuse("nothing to roll back: no release is recorded yet", **current)
        to = other(active, colors)
        target = state["colors"][to]
        if not target.get("version"):
            return _refuse(
                f"nothing to roll back to: {to} has no recorded version (only {active} has ever "
                f"served); deploy a known-good version instead",
                **current,
            )
        refused = refuse_bad(target["version"])
        if refused:
            return refused
        found = per_color.get(to) or {}
        # Inside the rollback window: every container of the colour runs what its
        # record says (the settings' hash and the image), so nothing is started again.
        warm = bool(
            found.get("running")
            and not found.get("restarting")
            and found.get("config") == target.get("config")
            and found.get("image_id") == target.get("image_id")
            and target.get("image_id")
        )
        return {
            "kind": "rollback",
            "why": f"back to the version recorded on {to}"
            + (", which still runs it (warm)" if warm else ", started again from its record"),
            **current,
            "to_color": to,
            "to_version": target["version"],
            "to_digest": target.get("digest"),
            "to_image_id": target.get("image_id"),
            "warm": warm,
        }

    if action != "release":
        raise BlueGreenError(
            f"unknown action {action!r}; expected release, rollback, repair, promote or abort"
        )
    version = request.get("version")
    if not version:
        raise BlueGreenError("a release needs a version")
    refused = refuse_bad(version)
    if refused:
        return refused
    wanted = {
        "to_version": version,
        "to_digest": request.get("digest"),
        "to_image_id": request.get("image_id"),
    }
    if active is None:
        return {
            "kind": "release",
            "why": "first release",
            **current,
            "to_color": colors[0],
            **wanted,
        }
    live = state["colors"][active]
    facts = per_color.get(active, {})
    differences = []
    if live.get("version") != version:
        differences.append(f"version {live.get('version')} → {version}")
    if request.get("image_id") and live.get("image_id") != request.get("image_id"):
        differences.append(f"image {live.get('image_id')} → {request.get('image_id')}")
    if request.get("config") and facts.get("config") != request.get("config"):
        differences.append("container configuration changed")
    if not facts.get("running"):
        differences.append(f"the containers of {active} are not all running")
    if not differences:
        return {
            "kind": "noop",
            "why": f"{version} already serves on {active} with this image and configuration",
            **current,
            "to_color": active,
            **wanted,
        }
    return {
        "kind": "release",
        "why": "; ".join(differences),
        **current,
        "to_color": other(active, colors),
        **wanted,
    }


def _canary_target(state: Mapping[str, Any], canary: Mapping[str, Any]) -> dict[str, Any]:
    color = str(canary.get("color"))
    record = state["colors"].get(color) or {}
    return {
        "to_color": color,
        "to_version": canary.get("version"),
        "to_digest": canary.get("digest") or record.get("digest"),
        "to_image_id": record.get("image_id"),
        "canary": dict(canary),
    }


# --- HTTP ------------------------------------------------------------------


# The GET that reads nginx's answer lives in module_utils/httpfetch.py
# (ansible.module_utils.urls): only modules ask URLs, and this file must
# import without Ansible for the host's retirement script.


def edge_answer(status: int | None, body: str, error: str | None) -> dict[str, Any]:
    """What nginx's answer on the health path says about the colour that serves."""
    answer: dict[str, Any] = {"status": status, "color": None, "version": None, "error": error}
    if status != 200:
        answer["error"] = error or f"HTTP {status}"
        return answer
    try:
        document = json.loads(body)
    except ValueError:
        answer["error"] = f"not JSON: {body[:120]!r}"
        return answer
    if isinstance(document, dict):
        answer["color"] = document.get("color")
        answer["version"] = document.get("version")
    return answer


# -- observe: the host as the engine sees it ------------------------------------

# GET url -> (status, body, transport error): Ansible's client in the modules
# (module_utils/httpfetch.py), the standard library's on the host (watchdog.py).
Fetch = Callable[..., "tuple[int | None, str, str | None]"]


def deadline_or_none(path: str) -> float | None:
    """Facts report an unreadable deadline as none; the retirement script refuses it."""
    try:
        return read_deadline(path)
    except BlueGreenError:
        return None


def observe(params: Mapping[str, Any], now: datetime, fetch: Fetch) -> dict[str, Any]:
    """The record, the lock, nginx's upstream marker and answer, the containers, the
    drift between them and the plan for ``params["request"]``: what bluegreen_facts
    returns and what the host's read-only observer prints (``watchdog.py --observe``).

    ``params``: dir, app, colors, services, upstreams_file, edge_url, edge_host,
    edge_validate_certs, health_path, request_timeout, containers (entries of the
    container list or ``docker inspect`` documents), request. The only I/O is
    reading files and the one GET through ``fetch``."""
    colors = check_colors(params["colors"])
    files = paths(params["dir"], colors)
    text = read_text(files["state"])
    state = load_state(text, files["state"], params["app"], colors)
    lock = parse_lock(read_text(files["lock"]))
    if lock is not None:
        lock["expired"] = "unreadable" not in lock and is_expired(lock, now)
    upstream = parse_marker(read_text(params["upstreams_file"]))
    # Pinned to the stable colour: during a canary nginx would otherwise answer
    # from either colour (outside one the header changes nothing).
    headers = {PIN_HEADER: PIN_STABLE}
    if params.get("edge_host"):
        headers["Host"] = params["edge_host"]
    edge = edge_answer(
        *fetch(
            params["edge_url"].rstrip("/") + params["health_path"],
            params["request_timeout"],
            headers,
            params["edge_validate_certs"],
        )
    )
    containers = [summarize_container(c) for c in params.get("containers") or []]
    per_color = colors_of(containers, colors, list(params["services"]))
    found = drift(state, upstream, edge, per_color)
    request = dict(params.get("request") or {"action": "none"})
    return {
        "state": state,
        "state_exists": bool(text and text.strip()),
        "lock": lock,
        "upstream": upstream,
        "edge": edge,
        "colors": per_color,
        "retire": {c: deadline_or_none(files["retire"][c]) for c in colors},
        "drift": found,
        "plan": plan(state, found, per_color, request, colors),
    }
