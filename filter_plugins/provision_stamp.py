# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether a deploy provisions the host (playbooks/provision.yml's first play).

A full provisioning is the same work whether anything changed or not: on the
sandbox a no-op run of the roles took 33-50 s over SSH, the release after it
4 s. After a provisioning that ended well, the host keeps a stamp: the
fingerprint of everything provisioning reads (the repository's roles,
playbooks, plugins, shared variables and the run's inventory, the Ansible
version) and when. The next deploy provisions only when that fingerprint
differs, the stamp is older than the maximum age (drift made by hand is
repaired at least that often), the stamp is missing or unreadable, the run is
a dry run or limited to tags, or the inventory asks for it always.

The cores are pure: ``fingerprint`` of (path, bytes) pairs, ``decision`` with
the clock passed in. Documentation: ``provision_fingerprint.yml``,
``provision_decision.yml``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parent.parent
# What provisioning reads from the repository (the inventory is the run's own).
# Tests, the harness, the app's source and documentation are not read by it.
INPUTS = (
    "ansible.cfg",
    "deploy.yml",
    "requirements.yml",
    "group_vars",
    "playbooks",
    "roles",
    "library",
    "module_utils",
    "filter_plugins",
    "monitoring",
)
SKIPPED_PARTS = {"__pycache__", ".pytest_cache"}
SKIPPED_SUFFIXES = (".pyc", ".retry")
# provision_mode's values; "direct" is not one: playbooks/provision.yml run by
# itself (not imported by deploy.yml) always provisions, and says so.
MODES = ("changed", "always")
DIRECT = "direct"


def fingerprint(entries: Iterable[tuple[str, bytes]], extra: Mapping[str, str]) -> str:
    """sha256 over every (path, content) pair, in path order, and the extra facts."""
    digest = hashlib.sha256()
    for path, content in sorted(entries):
        digest.update(f"{path}\0{hashlib.sha256(content).hexdigest()}\n".encode())
    for key in sorted(extra):
        digest.update(f"{key}={extra[key]}\n".encode())
    return digest.hexdigest()


def tree_entries(root: Path, names: Sequence[str], label: str = "") -> list[tuple[str, bytes]]:
    """(label + path relative to root, bytes) of every file under root's `names`
    (links followed), caches and retry files left out; a name that is absent is
    recorded as absent, so removing it changes the fingerprint too."""
    found: list[tuple[str, bytes]] = []
    for name in names:
        top = root / name
        if top.is_file():
            found.append((label + name, top.read_bytes()))
            continue
        if not top.is_dir():
            found.append((label + name, b"\0absent"))
            continue
        for path in sorted(top.rglob("*")):
            relative = path.relative_to(root)
            if SKIPPED_PARTS & set(relative.parts) or path.name.endswith(SKIPPED_SUFFIXES):
                continue
            if path.is_file():
                found.append((label + relative.as_posix(), path.read_bytes()))
    return found


def provision_fingerprint(inventory_dir: str, ansible_version: str) -> str:
    """The fingerprint of this repository's provisioning inputs and the inventory
    directory `inventory_dir` (its group_vars, host_vars and vault files)."""
    inventory = Path(str(inventory_dir))
    if not inventory.is_dir():
        raise AnsibleFilterError(f"provision_fingerprint: no inventory directory {inventory}")
    entries = tree_entries(ROOT, INPUTS)
    entries += tree_entries(inventory, ["."], label="inventory:")
    return fingerprint(entries, {"ansible": str(ansible_version)})


def _stamp(text: Any) -> tuple[Mapping[str, Any] | None, str]:
    """The stamp read from the host (None when there is none) and why it is unusable."""
    if text is None or text == "":
        return (
            None,
            "the host has no stamp of a full provisioning (a new host, or the last did not end)",
        )
    try:
        stamp = json.loads(str(text))
    except ValueError:
        return None, "the host's provisioning stamp is unreadable"
    if not isinstance(stamp, Mapping) or not isinstance(stamp.get("fingerprint"), str):
        return None, "the host's provisioning stamp has no fingerprint"
    if not isinstance(stamp.get("at"), (int, float)):
        return None, "the host's provisioning stamp has no time"
    return stamp, ""


def _when(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decision(
    stamp_text: Any,
    current: str,
    now: float,
    max_age_h: float,
    mode: str = "changed",
    check_mode: bool = False,
    run_tags: Sequence[str] = ("all",),
    skip_tags: Sequence[str] = (),
) -> dict[str, Any]:
    """{needed, why, stamp}: whether this run provisions, in one sentence why, and
    the stamp to write when it ends well (None when it must not be written)."""
    if mode not in (*MODES, DIRECT):
        raise AnsibleFilterError(f"provision_mode is {mode!r}; it must be one of {list(MODES)}")
    complete = not check_mode and list(run_tags) == ["all"] and not list(skip_tags)
    record = {"fingerprint": current, "at": float(now)} if complete else None

    def needed(why: str) -> dict[str, Any]:
        return {"needed": True, "why": f"provisioning runs: {why}", "stamp": record}

    if check_mode:
        return needed("a dry run (--check) shows every role's changes")
    if not complete:
        return needed(
            f"the run is limited to tags (--tags {','.join(run_tags)}"
            f"{' --skip-tags ' + ','.join(skip_tags) if skip_tags else ''}); no stamp is written"
        )
    if mode == DIRECT:
        return needed(
            "playbooks/provision.yml was run by itself (deploy.yml skips what is current)"
        )
    if mode == "always":
        return needed("the inventory or the command line sets provision_mode=always")
    stamp, unusable = _stamp(stamp_text)
    if stamp is None:
        return needed(unusable)
    age_h = (now - float(stamp["at"])) / 3600
    if stamp["fingerprint"] != current:
        return needed(
            f"what it reads changed since the last full provisioning at {_when(stamp['at'])} "
            f"(fingerprint {stamp['fingerprint'][:12]} then, {current[:12]} now)"
        )
    if age_h >= max_age_h or age_h < 0:
        return needed(
            f"the last full provisioning was at {_when(stamp['at'])}, {age_h:.1f} h ago "
            f"(provision_max_age_h: {max_age_h:g}): it repairs drift at least that often"
        )
    return {
        "needed": False,
        "why": (
            f"provisioning skipped: nothing it reads changed since the last full provisioning "
            f"at {_when(stamp['at'])} ({age_h:.1f} h ago, fingerprint {current[:12]}); it runs "
            f"again when the roles, playbooks or inventory change, after {max_age_h:g} h, or "
            f"with -e provision_mode=always"
        ),
        "stamp": None,
    }


def provision_decision(
    stamp_text: Any,
    current: str,
    max_age_h: float,
    mode: str = "changed",
    check_mode: bool = False,
    run_tags: Sequence[str] = ("all",),
    skip_tags: Sequence[str] = (),
    now: float | None = None,
) -> dict[str, Any]:
    """The filter: ``decision`` on the controller's clock unless `now` is given."""
    return decision(
        stamp_text,
        current,
        time.time() if now is None else float(now),
        float(max_age_h),
        str(mode),
        bool(check_mode),
        [str(t) for t in run_tags],
        [str(t) for t in skip_tags],
    )


class FilterModule:
    """Whether a deploy provisions the host."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "provision_fingerprint": provision_fingerprint,
            "provision_decision": provision_decision,
        }
