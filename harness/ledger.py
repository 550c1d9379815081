#!/usr/bin/env python3
"""The time ledger of a test run: each part's wall time and how much of it was
waiting.

`make test` runs each of its stages through ``ledger.py run NAME -- COMMAND``,
harness/scenarios.py records each scenario as it ends, and ``ledger.py print``
ends the run with the table (.ci/run prints it too, after a failure).

What is measured, honestly: the wall time, and the CPU time of the part's
process tree on this machine (user + system, from wait4: Ansible, Molecule,
pytest, the load generators). The rest of the wall time is "waiting": on the
test hosts' own work (apt, dpkg, systemd and the app run in containers, whose
CPU is not the harness's), on sleeps, timers and windows, and in the queue for
the two cores that every part shares. A part whose wait is large is a part that
a shorter window or a cheaper set-up makes faster; one whose CPU is large needs
less work.

Usage: ledger.py reset | run NAME -- COMMAND... | print
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEDGER = ROOT / ".cache" / "ledger.jsonl"


def record(part: str, wall_s: float, cpu_s: float | None, ok: bool, path: Path = LEDGER) -> None:
    """Append one part; cpu_s is None when it is not known (a part stopped over budget)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"part": part, "wall_s": round(wall_s, 1), "cpu_s": cpu_s, "ok": ok}
    with path.open("a") as ledger:
        ledger.write(json.dumps(entry) + "\n")


def run(part: str, command: list[str], path: Path = LEDGER) -> int:
    """Run `command`, record its wall and CPU time as `part`, return its exit code."""
    started = time.monotonic()
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    record(part, time.monotonic() - started, usage.ru_utime + usage.ru_stime, code == 0, path)
    return code


def entries(path: Path = LEDGER) -> list[dict[str, object]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(rows: list[dict[str, object]]) -> list[str]:
    """The ledger's lines: the stages (make's targets) and, under them, what
    harness/scenarios.py recorded (names with a "  " prefix)."""
    lines = [
        "Time ledger (wall; CPU of the part's processes here; waiting = the rest: the "
        "hosts' own work, sleeps and windows, the queue for the cores):",
        f"  {'part':<34} {'wall':>8} {'CPU here':>9} {'waiting':>8}",
    ]
    for row in rows:
        wall = float(row["wall_s"])  # type: ignore[arg-type]
        cpu = row.get("cpu_s")
        mark = "" if row.get("ok") else "  (failed or stopped)"
        if cpu is None:
            lines.append(f"  {row['part']!s:<34} {wall:7.0f}s {'?':>9} {'?':>8}{mark}")
            continue
        cpu_s = float(cpu)  # type: ignore[arg-type]
        waiting = max(0.0, wall - cpu_s)
        share = f"{100 * waiting / wall:3.0f} %" if wall else "  -"
        lines.append(
            f"  {row['part']!s:<34} {wall:7.0f}s {cpu_s:8.0f}s {waiting:7.0f}s {share}{mark}"
        )
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] == ["reset"]:
        LEDGER.unlink(missing_ok=True)
        return 0
    if argv[:1] == ["print"]:
        print("\n".join(table(entries())))
        return 0
    if len(argv) >= 4 and argv[0] == "run" and argv[2] == "--":
        return run(argv[1], argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
