#!/usr/bin/env python3
"""Run Molecule scenarios, each within its time budget.

Role scenarios run two at a time (most of their time is spent waiting on apt,
systemd and Ansible's round trips, not on the CPU); the scenarios in
``EXCLUSIVE`` run alone afterwards, because their load tests measure latency
and errors and must not share the machine. Each scenario's output goes to
``.cache/molecule-logs/<name>.log`` and is printed when it ends.

Prints one line per scenario with its wall time and budget, then the plain
summary line ``molecule: N passed, N failed``. A scenario that runs past its
budget is stopped (and destroyed) and counts as failed, so a slow scenario
shows up here instead of as a CI run that overruns.

Usage: scenarios.py [--jobs N] [SCENARIO ...]   (default: every molecule/*/molecule.yml)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".cache" / "molecule-logs"
# Wall-time budget per scenario in seconds; the fresh CI run must stay under
# 30 minutes in all, images and virtualenv included.
BUDGETS_S: dict[str, int] = {
    "default": 1800,
    "base": 600,  # 388 s in the last CI run, three scenarios at once
    "docker": 300,
    "node_exporter": 300,
}
DEFAULT_BUDGET_S = 480
EXCLUSIVE = {"default"}


@dataclass
class Run:
    name: str
    budget: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    elapsed: float = 0.0
    ok: bool = False
    why: str = ""
    handle: object = field(default=None, repr=False)


def scenarios_on_disk() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def start(run: Run) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    handle = run.log.open("wb")
    run.handle = handle
    print(
        f"=== start molecule test -s {run.name} (budget {run.budget} s, log {run.log})", flush=True
    )
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", NO_COLOR="1")
    run.proc = subprocess.Popen(
        ["molecule", "test", "-s", run.name],
        cwd=ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )
    run.started = time.monotonic()


def finish(run: Run, code: int | None) -> None:
    run.elapsed = time.monotonic() - run.started
    assert run.proc is not None
    if code is None:  # over budget
        os.killpg(run.proc.pid, signal.SIGTERM)
        try:
            run.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
        subprocess.run(
            ["molecule", "destroy", "-s", run.name],
            cwd=ROOT,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        run.ok, run.why = False, f"over its budget of {run.budget} s: stopped and destroyed"
    else:
        run.ok = code == 0
        run.why = "" if run.ok else f"molecule exited {code}"
    run.handle.close()  # type: ignore[attr-defined]
    print(
        f"=== end molecule test -s {run.name}: {'PASS' if run.ok else 'FAIL'} "
        f"in {run.elapsed:.0f} s {run.why}",
        flush=True,
    )
    sys.stdout.write(run.log.read_text(errors="replace"))
    print(f"=== (end of {run.name} log)", flush=True)


def run_all(runs: list[Run], jobs: int) -> None:
    queue = list(runs)
    active: list[Run] = []
    while queue or active:
        while queue and len(active) < jobs:
            run = queue.pop(0)
            start(run)
            active.append(run)
        time.sleep(1)
        for run in list(active):
            assert run.proc is not None
            code = run.proc.poll()
            over = time.monotonic() - run.started > run.budget
            if code is not None or over:
                finish(run, code)
                active.remove(run)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--jobs",
        type=int,
        # Three at once: the role scenarios mostly wait on apt and systemd, and
        # three lanes took the role phase of CI from 8.5 to 7.3 minutes.
        default=int(os.environ.get("MOLECULE_JOBS", "3")),
        help="role scenarios run at once (default 3, env MOLECULE_JOBS)",
    )
    parser.add_argument("scenarios", nargs="*")
    args = parser.parse_args(argv)
    names = args.scenarios or scenarios_on_disk()
    unknown = [n for n in names if n not in scenarios_on_disk()]
    if unknown:
        print(f"scenarios: no such scenario {unknown}; have {scenarios_on_disk()}", file=sys.stderr)
        return 2
    runs = {n: Run(n, BUDGETS_S.get(n, DEFAULT_BUDGET_S), LOGS / f"{n}.log") for n in names}
    shared = [runs[n] for n in names if n not in EXCLUSIVE]
    alone = [runs[n] for n in names if n in EXCLUSIVE]
    started = time.monotonic()
    run_all(shared, max(1, args.jobs))
    run_all(alone, 1)
    print(f"\nMolecule scenarios ({time.monotonic() - started:.0f} s in all):")
    for run in runs.values():
        status = "PASS" if run.ok else "FAIL"
        print(f"  {status}  {run.name:<16} {run.elapsed:6.0f} s of {run.budget} s  {run.why}")
    passed = sum(1 for r in runs.values() if r.ok)
    failed = len(runs) - passed
    print(f"molecule: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
