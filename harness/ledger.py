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

``ledger.py together NAME... -- COMMAND...`` runs ``COMMAND NAME`` for every
name at once (`make test`: lint, unit and the test-bed images, none of which
needs another's output), each one's output to ``.cache/stage-logs/NAME.log``,
printed whole when it ends, so the log reads one stage at a time.

Beside its own CPU time each part records the whole machine's: the share of
every core's time that was busy (from /proc/stat) while the part ran, whoever
used it. Near 100 % the part's waiting was mostly the queue for the cores (less
work anywhere makes it faster); well below, it waited on sleeps and windows
(shorter ones make it faster).

Usage: ledger.py reset | run NAME -- COMMAND... | together NAME... -- COMMAND... | print
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
STAGE_LOGS = ROOT / ".cache" / "stage-logs"


STAT = Path("/proc/stat")


def cpu_ticks(stat_text: str) -> tuple[int, int]:
    """(busy, total) clock ticks of every core together, from /proc/stat's first
    line (user nice system idle iowait irq softirq steal ...; guest time is
    already inside user and nice). Idle and iowait are not busy."""
    for line in stat_text.splitlines():
        fields = line.split()
        if fields[:1] == ["cpu"]:
            ticks = [int(value) for value in fields[1:9]]
            return sum(ticks) - ticks[3] - ticks[4], sum(ticks)
    raise ValueError("no aggregate cpu line in /proc/stat")


def sample(stat: Path = STAT) -> tuple[int, int] | None:
    """The machine's ticks now; None where there is no /proc/stat."""
    try:
        return cpu_ticks(stat.read_text())
    except (OSError, ValueError):
        return None


def busy_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of the machine's core time that was busy between two samples."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 3)


def record(
    part: str,
    wall_s: float,
    cpu_s: float | None,
    ok: bool,
    path: Path = LEDGER,
    machine: float | None = None,
    why: list[str] | None = None,
) -> None:
    """Append one part; cpu_s is None when it is not known (a part stopped over
    budget); machine is the whole machine's busy share while it ran (busy_share);
    why, for a failed part, the lines of its log that say why (kept only then)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entry: dict[str, object] = {"part": part, "wall_s": round(wall_s, 1), "cpu_s": cpu_s, "ok": ok}
    if machine is not None:
        entry["machine"] = machine
    if why and not ok:
        entry["why"] = why
    with path.open("a") as ledger:
        ledger.write(json.dumps(entry) + "\n")


def run(part: str, command: list[str], path: Path = LEDGER) -> int:
    """Run `command`, record its wall and CPU time as `part`, return its exit code."""
    started, ticks = time.monotonic(), sample()
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    record(
        part,
        time.monotonic() - started,
        usage.ru_utime + usage.ru_stime,
        code == 0,
        path,
        busy_share(ticks, sample()),
    )
    return code


def together(
    names: list[str], command: list[str], path: Path = LEDGER, logs: Path = STAGE_LOGS
) -> int:
    """Run `command + [name]` for every name at once; record each as `name` when it
    ends and print its output then. Returns 0 when all passed, else the first
    failure's exit code, after every one has ended (nothing is left running)."""
    logs.mkdir(parents=True, exist_ok=True)
    started, ticks = time.monotonic(), sample()
    running: dict[int, tuple[str, Path]] = {}
    for name in names:
        log = logs / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([*command, name], stdout=out, stderr=subprocess.STDOUT)
        running[proc.pid] = (name, log)
    failed: list[tuple[str, int]] = []
    while running:
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        name, log = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        cpu_s = usage.ru_utime + usage.ru_stime
        record(name, wall, cpu_s, code == 0, path, busy_share(ticks, sample()))
        verdict = "passed" if code == 0 else f"FAILED (exit {code})"
        print(f"==> {name}: {verdict} after {wall:.0f} s (its output, {log}):", flush=True)
        sys.stdout.buffer.write(log.read_bytes())
        print(f"<== {name}", flush=True)
        if code:
            failed.append((name, code))
    if failed:
        print(
            "ledger: failed: "
            + ", ".join(f"{name} (exit {code})" for name, code in failed)
            + "; each one's output is above and in "
            + str(logs),
            flush=True,
        )
        return failed[0][1]
    return 0


def entries(path: Path = LEDGER) -> list[dict[str, object]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def table(rows: list[dict[str, object]]) -> list[str]:
    """The ledger's lines: the stages (make's targets) and, under them, what
    harness/scenarios.py recorded (names with a "  " prefix)."""
    lines = [
        "Time ledger (wall; CPU of the part's processes here; waiting = the rest: the "
        "hosts' own work, sleeps and windows, the queue for the cores; machine = how busy "
        "all the cores were meanwhile, whoever used them):",
        f"  {'part':<34} {'wall':>8} {'CPU here':>9} {'waiting':>13} {'machine':>8}",
    ]
    for row in rows:
        wall = float(row["wall_s"])  # type: ignore[arg-type]
        cpu = row.get("cpu_s")
        busy = row.get("machine")
        machine = f"{100 * float(busy):6.0f} %" if busy is not None else f"{'?':>8}"  # type: ignore[arg-type]
        mark = "" if row.get("ok") else "  (failed or stopped)"
        if cpu is None:
            lines.append(f"  {row['part']!s:<34} {wall:7.0f}s {'?':>9} {'?':>13} {machine}{mark}")
            continue
        cpu_s = float(cpu)  # type: ignore[arg-type]
        waiting = max(0.0, wall - cpu_s)
        share = f"{100 * waiting / wall:3.0f} %" if wall else "  -"
        lines.append(
            f"  {row['part']!s:<34} {wall:7.0f}s {cpu_s:8.0f}s {waiting:7.0f}s {share} "
            f"{machine}{mark}"
        )
    return lines


# A reason line longer than this is cut: an assertion that prints a whole
# response must not push the others out of a CI excerpt.
REASON_WIDTH = 400


def reasons(rows: list[dict[str, object]]) -> list[str]:
    """After the table: each failed part's reasons, as it recorded them."""
    failed = [row for row in rows if not row.get("ok") and row.get("why")]
    if not failed:
        return []
    lines = ["", "Why the failed parts failed (each one's whole log is printed above):"]
    for row in failed:
        lines.append(f"  {str(row['part']).strip()}:")
        for line in row["why"]:  # type: ignore[attr-defined]
            text = str(line)
            cut = text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 3] + "..."
            lines.append(f"    {cut}")
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] == ["reset"]:
        LEDGER.unlink(missing_ok=True)
        return 0
    if argv[:1] == ["print"]:
        rows = entries()
        print("\n".join(table(rows) + reasons(rows)))
        return 0
    if len(argv) >= 4 and argv[0] == "run" and argv[2] == "--":
        return run(argv[1], argv[3:])
    if argv[:1] == ["together"] and "--" in argv[2:]:
        split = argv.index("--")
        if split > 1 and split < len(argv) - 1:
            return together(argv[1:split], argv[split + 1 :])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
