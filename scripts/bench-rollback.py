#!/usr/bin/env python3
"""Time playbooks/rollback.yml inside the rollback window, over SSH, as an operator runs it.

Against an inventory whose host serves one version (the sandbox of `make
deploy` by default): releases --version once so that the other colour holds
the previous one, then rolls back and forth --runs times, and prints each
run's wall time, Ansible's own time (the profile's total) and whether the plan
said the colour to go back to was warm (nothing to start). Runs inside the
window only: the whole loop must end before the first colour's retirement
(bluegreen_rollback_window_s, 300 s on the sandbox).

Usage: scripts/bench-rollback.py [--inventory inventory/sandbox] [--version v2] [--runs 6]
Needs the virtualenv's ansible-playbook on PATH (make venv) and the inventory's host up.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# profile_tasks' last line: "... 0:00:04.576 ****"
TOTAL = re.compile(r"(\d+):(\d\d):(\d\d\.\d+) \*+\s*$")


def playbook(inventory: str, name: str, *extra: str) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(
        ["ansible-playbook", "-i", inventory, f"playbooks/{name}", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"},
        timeout=900,
    )
    wall = time.monotonic() - started
    if done.returncode != 0:
        tail = done.stdout[-3000:] + done.stderr[-1000:]
        sys.exit(f"{name} failed (rc {done.returncode}):\n{tail}")
    return wall, done.stdout


def ansible_seconds(output: str) -> float | None:
    found = [TOTAL.search(line) for line in output.splitlines()]
    last = [m for m in found if m]
    if not last:
        return None
    hours, minutes, seconds = last[-1].groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inventory", default="inventory/sandbox")
    parser.add_argument("--version", default="v2", help="released once before the rollbacks")
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()

    wall, _ = playbook(args.inventory, "release.yml", "-e", f"app_version={args.version}")
    print(f"release of {args.version}: {wall:.1f} s; now {args.runs} rollbacks back and forth")
    walls, own = [], []
    for run in range(1, args.runs + 1):
        wall, out = playbook(args.inventory, "rollback.yml")
        seconds = ansible_seconds(out)
        plan = re.search(r"Plan: rollback \(([^)]*\)?)\)", out)
        print(
            f"rollback {run}: {wall:.2f} s wall, Ansible's own "
            f"{'?' if seconds is None else f'{seconds:.2f}'} s; plan: "
            f"{plan.group(1) if plan else 'not printed'}"
        )
        walls.append(wall)
        if seconds is not None:
            own.append(seconds)
    print(
        f"wall: median {statistics.median(walls):.2f} s, min {min(walls):.2f}, max "
        f"{max(walls):.2f}"
        + (f"; Ansible's own: median {statistics.median(own):.2f} s" if own else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
