#!/usr/bin/env python3
"""CD's plan, before anyone approved: read each host through its read-only
observer key and say what a deploy or rollback would do there.

    scripts/cd-plan.py --action deploy --version <sha> [--digest sha256:...]
    scripts/cd-plan.py --action rollback

The hosts are the inventory's ($INVENTORY, default inventory/production; read
with ansible-inventory and no group variables, so no vault password is
needed). For each host, `ssh <observer>@<host>` runs the one command the
observer's key may run (roles/bluegreen/tasks/observer.yml: the host prints
its facts as JSON, bluegreen.observe) and the plan is made here from those
facts by the engine's own planner (module_utils/bluegreen.py: plan), the one
the release runs on the host after the approval. SSH options come from
$CD_SSH_CONFIG (scripts/ci-access.sh writes it, with the pinned host key).

Prints the plan as Markdown (the job summary); exit 0 when every host can do
it (release, rollback, or nothing to do), 1 when a host would refuse it
(drift, a canary in progress, a version marked bad: the reason and what to do
are printed) or cannot be read, 2 on wrong usage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "module_utils"))
import bluegreen as core  # noqa: E402  (the engine's record, drift and planner)

GROUP = "archibald"
SSH_TIMEOUT_S = 60

Observe = Callable[[str, Mapping[str, Any]], str]


def inventory_hosts(inventory: str) -> dict[str, dict[str, Any]]:
    """The hosts of the app's group with their connection variables, from the
    inventory's host entries only (no group_vars: no vault password needed)."""
    env = {**os.environ, "ANSIBLE_VARS_ENABLED": "none"}
    out = subprocess.run(
        ["ansible-inventory", "-i", inventory, "--list"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    listing = json.loads(out)
    names = listing.get(GROUP, {}).get("hosts", [])
    hostvars = listing.get("_meta", {}).get("hostvars", {})
    return {name: dict(hostvars.get(name, {})) for name in names}


def observer_user(hostvars: Mapping[str, Any]) -> str:
    """The observer's user on the host, as the role makes it: the host's
    bluegreen_observer_user if its inventory entry sets one, else the role's
    default rendered with group_vars/all.yml's bluegreen_app (read here, not
    repeated: those two files own it)."""
    if hostvars.get("bluegreen_observer_user"):
        return str(hostvars["bluegreen_observer_user"])
    defaults = yaml.safe_load((ROOT / "roles/bluegreen/defaults/main.yml").read_text())
    shared = yaml.safe_load((ROOT / "group_vars/all.yml").read_text()) or {}
    app = hostvars.get("bluegreen_app") or shared.get("bluegreen_app") or defaults["bluegreen_app"]
    return jinja2.Template(defaults["bluegreen_observer_user"]).render(bluegreen_app=app)


def ssh_observe(name: str, hostvars: Mapping[str, Any]) -> str:
    """The facts the host prints for the observer key (whatever command is asked,
    the key's entry forces the observer: none is sent)."""
    argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_TIMEOUT_S}"]
    if os.environ.get("CD_SSH_CONFIG"):
        argv += ["-F", os.environ["CD_SSH_CONFIG"]]
    if os.environ.get("CD_OBSERVER_KEY"):
        argv += ["-i", os.environ["CD_OBSERVER_KEY"], "-o", "IdentitiesOnly=yes"]
    if hostvars.get("ansible_port"):
        argv += ["-p", str(hostvars["ansible_port"])]
    user = observer_user(hostvars)
    argv += ["-l", user, str(hostvars.get("ansible_host") or name)]
    done = subprocess.run(
        argv,
        capture_output=True,
        stdin=subprocess.DEVNULL,  # ssh would make an inherited stdin non-blocking
        text=True,
        timeout=SSH_TIMEOUT_S * 2,
    )
    if done.returncode != 0:
        raise OSError(f"ssh as {user} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout


def request_for(action: str, version: str | None, digest: str | None) -> dict[str, Any]:
    if action == "rollback":
        return {"action": "rollback"}
    return {"action": "release", "version": version, "digest": digest or None}


def plan_host(facts: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's plan from the observed facts (what release.yml's observe step
    will decide on the host, unless the host changes before the approval)."""
    colors = list(facts.get("colors_order") or facts["state"]["colors"])
    return core.plan(facts["state"], facts["drift"], facts["colors"], request, colors)


def describe(name: str, facts: Mapping[str, Any], made: Mapping[str, Any]) -> list[str]:
    """Markdown lines for one host."""
    state = facts["state"]
    active = state.get("active")
    serving = f"{active} {state['colors'][active].get('version')}" if active else "nothing yet"
    edge = facts.get("edge") or {}
    answer = (
        f"{edge.get('color')} {edge.get('version')}"
        if edge.get("status") == 200
        else f"no healthy answer ({edge.get('error')})"
    )
    lines = [
        f"### {name}",
        "",
        f"- observed at {facts.get('observed_at')}: the record says {serving}; nginx answers "
        f"{answer}",
    ]
    kind = made["kind"]
    if kind == "release":
        lines.append(
            f"- **plan: release {made['to_version']} to {made['to_color']}** "
            f"({made['why']}); {made.get('from_color')} {made.get('from_version')} stays warm "
            f"for the rollback window"
        )
    elif kind == "rollback":
        lines.append(
            f"- **plan: roll back to {made['to_version']} on {made['to_color']}** ({made['why']})"
        )
    elif kind == "noop":
        lines.append(f"- **plan: nothing to do**: {made['why']}")
    else:
        lines.append(f"- **plan: {kind}**: {made['why']}")
    drift = facts.get("drift") or []
    lines.append("- drift: " + ("; ".join(drift) if drift else "none"))
    canary = state.get("canary")
    lines.append("- canary: " + (core.describe_canary(canary) if canary else "none"))
    lock = facts.get("lock")
    if lock and not lock.get("expired"):
        lines.append(
            "- release lock: "
            + core.describe_lock("release.lock", lock)
            + " (the deploy waits for it, then looks again)"
        )
    if facts.get("maintenance"):
        lines.append("- maintenance mode is on: the release refuses unless told")
    bad = state.get("bad_versions") or {}
    if bad:
        lines.append("- marked bad: " + ", ".join(sorted(bad)))
    return lines


def main(argv: Sequence[str], observe: Observe = ssh_observe) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--action", choices=["deploy", "rollback"], required=True)
    parser.add_argument("--version")
    parser.add_argument("--digest")
    parser.add_argument("--inventory", default=os.environ.get("INVENTORY", "inventory/production"))
    parser.add_argument("--facts", help="read one host's facts from this file instead of SSH")
    args = parser.parse_args(argv)
    if args.action == "deploy" and not args.version:
        parser.error("a deploy needs --version")
    request = request_for(args.action, args.version, args.digest)
    title = f"Plan: {args.action} {args.version or ''}".rstrip()
    if args.facts:
        hosts: dict[str, dict[str, Any]] = {Path(args.facts).stem: {}}
    else:
        hosts = inventory_hosts(args.inventory)
        if not hosts:
            print(f"::error::no host in group {GROUP} of {args.inventory}")
            return 1
    lines, failed = [f"## {title} (read-only observer, nothing changed)", ""], False
    for name, hostvars in hosts.items():
        try:
            text = Path(args.facts).read_text() if args.facts else observe(name, hostvars)
            facts = json.loads(text)
            made = plan_host(facts, request)
        except (OSError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
            lines += [
                f"### {name}",
                "",
                f"- **cannot read the host**: {exc}. Check VPS_OBSERVER_KEY and "
                f"bluegreen_observer_authorized_keys (OPERATIONS.md 1.3), then run CD again.",
            ]
            failed = True
            continue
        except core.BlueGreenError as exc:
            lines += [f"### {name}", "", f"- **the plan cannot be made**: {exc}"]
            failed = True
            continue
        lines += describe(name, facts, made)
        if made["kind"] == "refuse":
            failed = True
            print(f"::error title=The {args.action} would be refused on {name}::{made['why']}")
        lines.append("")
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
