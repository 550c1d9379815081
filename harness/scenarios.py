#!/usr/bin/env python3
"""Run Molecule scenarios one after another, each within its time budget.

Prints one line per scenario with its wall time and budget, then the plain
summary line ``molecule: N passed, N failed``. A scenario that runs past its
budget is stopped (and destroyed) and counts as failed, so a slow scenario
shows up as a failure here instead of as a CI run that overruns.

Usage: scenarios.py [SCENARIO ...]   (default: every molecule/*/molecule.yml)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Wall-time budget per scenario in seconds; the fresh CI run must stay under
# 30 minutes in all, images and virtualenv included.
BUDGETS_S: dict[str, int] = {
    "default": 900,
    "docker": 300,
}
DEFAULT_BUDGET_S = 420


def scenarios_on_disk() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def run_one(name: str) -> tuple[bool, float, str]:
    budget = BUDGETS_S.get(name, DEFAULT_BUDGET_S)
    started = time.monotonic()
    print(f"=== molecule test -s {name} (budget {budget} s)", flush=True)
    proc = subprocess.Popen(["molecule", "test", "-s", name], cwd=ROOT, start_new_session=True)
    try:
        code = proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["molecule", "destroy", "-s", name], cwd=ROOT, check=False)
        elapsed = time.monotonic() - started
        return False, elapsed, f"over its budget of {budget} s: stopped and destroyed"
    elapsed = time.monotonic() - started
    return code == 0, elapsed, "" if code == 0 else f"molecule exited {code}"


def main(argv: list[str]) -> int:
    names = argv or scenarios_on_disk()
    unknown = [n for n in names if n not in scenarios_on_disk()]
    if unknown:
        print(f"scenarios: no such scenario {unknown}; have {scenarios_on_disk()}", file=sys.stderr)
        return 2
    results: list[tuple[str, bool, float, str]] = []
    for name in names:
        ok, elapsed, why = run_one(name)
        results.append((name, ok, elapsed, why))
    print("\nMolecule scenarios:")
    for name, ok, elapsed, why in results:
        budget = BUDGETS_S.get(name, DEFAULT_BUDGET_S)
        status = "PASS" if ok else "FAIL"
        print(f"  {status}  {name:<16} {elapsed:6.0f} s of {budget} s  {why}")
    passed = sum(1 for r in results if r[1])
    failed = len(results) - passed
    print(f"molecule: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
