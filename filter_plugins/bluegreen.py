# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Blue/green release planning filters.

The documentation of each filter lives beside this file, in
``bluegreen_plan.yml`` and ``bluegreen_rollback_plan.yml``: one Python file
registers several filters, and ``ansible-doc -t filter <name>`` reads the
adjacent YAML file named after the filter (the layout ansible-core uses for its
own filters).

The filters read the host state file written by the ``bluegreen_state``
module::

    {"schema": 1, "app": "archibald", "active": "blue" | null,
     "colors": {"blue": {"version": "v1", "started_at": "..."},
                "green": {"version": null, "started_at": null}},
     "switched_at": "..." | null,
     "bad_versions": {"v3": {"at": "...", "reason": "..."}},
     "history": [...]}

A missing or empty state (None, "", {}) means that no release was made yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

SCHEMA_VERSION = 1
DEFAULT_COLORS: tuple[str, str] = ("blue", "green")


def _colors(colors: Any) -> tuple[str, str]:
    """Validate the ``colors`` argument: exactly two distinct, non-empty names."""
    if colors is None:
        return DEFAULT_COLORS
    if isinstance(colors, str) or not isinstance(colors, Sequence):
        raise AnsibleFilterError(
            f"colors must be a list of two colour names such as ['blue', 'green'], got {colors!r}"
        )
    names = list(colors)
    if (
        len(names) != 2
        or not all(isinstance(c, str) and c.strip() for c in names)
        or names[0] == names[1]
    ):
        raise AnsibleFilterError(
            f"colors must be two distinct, non-empty colour names such as ['blue', 'green'], "
            f"got {names!r}"
        )
    return str(names[0]), str(names[1])


def _version(version: Any) -> str:
    if not isinstance(version, str):
        raise AnsibleFilterError(
            f"version must be a non-empty string (an image tag or git sha), got "
            f"{version!r} of type {type(version).__name__}; quote it or apply '| string'"
        )
    if not version.strip():
        raise AnsibleFilterError(
            "version must be a non-empty string (an image tag or git sha), got an empty string; "
            "set app_version, e.g. -e app_version=<git sha>"
        )
    return str(version)


def _force(force: Any) -> bool:
    try:
        return bool(boolean(force, strict=True))
    except TypeError as exc:
        raise AnsibleFilterError(
            f"force must be a boolean (true/false), got {force!r}: {exc}"
        ) from exc


def load_state(state: Any, colors: tuple[str, str]) -> dict[str, Any] | None:
    """Parse and validate a state file's content; None means "no release yet".

    ``state`` may be a mapping, a JSON string, or empty (None, "", {}).
    """
    if state is None:
        return None
    if isinstance(state, (str, bytes)):
        text = state.decode("utf-8") if isinstance(state, bytes) else str(state)
        if not text.strip():
            return None
        try:
            state = json.loads(text)
        except ValueError as exc:
            raise AnsibleFilterError(
                f"state is not valid JSON ({exc}); expected the content of the blue/green "
                f"state file, a dict, or an empty value for the first release"
            ) from exc
        if state is None:
            return None
    if not isinstance(state, Mapping):
        raise AnsibleFilterError(
            f"state must be a dict (the blue/green state file) or a JSON string, got "
            f"{type(state).__name__}: {state!r}"
        )
    if not state:
        return None

    schema = state.get("schema")
    if schema != SCHEMA_VERSION:
        raise AnsibleFilterError(
            f"state has schema {schema!r}, expected schema {SCHEMA_VERSION}; this filter "
            f"cannot plan from a state file it does not understand"
        )

    per_color = state.get("colors")
    if not isinstance(per_color, Mapping):
        raise AnsibleFilterError(
            f"state.colors must be a dict with one entry per colour ({', '.join(colors)}), "
            f"got {per_color!r}"
        )
    unknown = sorted(str(c) for c in per_color if c not in colors)
    if unknown:
        raise AnsibleFilterError(
            f"state.colors names unknown colour(s) {', '.join(unknown)}; expected only "
            f"{', '.join(colors)}"
        )
    for color in colors:
        entry = per_color.get(color)
        if not isinstance(entry, Mapping):
            raise AnsibleFilterError(
                f"state.colors.{color} is missing or not a dict (got {entry!r}); expected "
                f'{{"version": ..., "started_at": ...}}'
            )
        recorded = entry.get("version")
        if recorded is not None and not isinstance(recorded, str):
            raise AnsibleFilterError(
                f"state.colors.{color}.version must be a string or null, got {recorded!r}"
            )

    active = state.get("active")
    if active is not None and active not in colors:
        raise AnsibleFilterError(
            f"state.active is {active!r}, expected one of {', '.join(colors)} or null"
        )

    bad = state.get("bad_versions", {})
    if bad is None:
        bad = {}
    if not isinstance(bad, Mapping):
        raise AnsibleFilterError(
            f"state.bad_versions must be a dict of version -> {{at, reason}}, got {bad!r}"
        )
    return dict(state)


def _other(color: str, colors: tuple[str, str]) -> str:
    return colors[1] if color == colors[0] else colors[0]


def _recorded_version(state: Mapping[str, Any], color: str) -> str | None:
    version = state["colors"][color].get("version")
    return None if version is None else str(version)


def bluegreen_plan(
    state: Any, version: Any, colors: Any = None, force: Any = False
) -> dict[str, Any]:
    """Plan a release of ``version`` from the current state.

    The target is always the inactive colour (the first colour for a first
    release). ``noop`` is true when ``version`` already serves traffic.
    """
    names = _colors(colors)
    wanted = _version(version)
    forced = _force(force)
    current = load_state(state, names)

    bad_versions: Mapping[str, Any] = (current or {}).get("bad_versions") or {}
    bad_entry = bad_versions.get(wanted)
    if bad_entry is not None and not forced:
        reason = bad_entry.get("reason") if isinstance(bad_entry, Mapping) else None
        at = bad_entry.get("at") if isinstance(bad_entry, Mapping) else None
        detail = f" (marked bad at {at}: {reason})" if reason or at else ""
        raise AnsibleFilterError(
            f"version {wanted} is listed in bad_versions{detail}; refusing to deploy it. "
            f"Deploy another version, or pass force=true (-e app_force=true) to deploy it anyway"
        )

    active = None if current is None else current.get("active")
    if active is None:
        target = names[0]
        previous_color = None
        previous_version = None
    else:
        target = _other(str(active), names)
        previous_color = str(active)
        previous_version = _recorded_version(current or {}, previous_color)

    return {
        "first_release": active is None,
        "version": wanted,
        "active": previous_color,
        "target": target,
        "previous_color": previous_color,
        "previous_version": previous_version,
        "noop": previous_version is not None and previous_version == wanted,
        "target_current_version": (None if current is None else _recorded_version(current, target)),
        "forced_bad": bad_entry is not None,
    }


def bluegreen_rollback_plan(state: Any, colors: Any = None) -> dict[str, Any]:
    """Plan a switch back to the inactive colour and the version recorded on it."""
    names = _colors(colors)
    current = load_state(state, names)
    if current is None or current.get("active") is None:
        raise AnsibleFilterError(
            "nothing to roll back to: the state records no release yet (active is null)"
        )
    from_color = str(current["active"])
    to_color = _other(from_color, names)
    to_version = _recorded_version(current, to_color)
    if to_version is None:
        raise AnsibleFilterError(
            f"nothing to roll back to: colour {to_color} has no recorded version "
            f"(only {from_color} has ever served); deploy a known-good version instead"
        )
    bad_versions: Mapping[str, Any] = current.get("bad_versions") or {}
    return {
        "from": from_color,
        "to": to_color,
        "version": to_version,
        "from_version": _recorded_version(current, from_color),
        "version_is_bad": to_version in bad_versions,
    }


class FilterModule:
    """Blue/green release planning filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "bluegreen_plan": bluegreen_plan,
            "bluegreen_rollback_plan": bluegreen_rollback_plan,
        }
