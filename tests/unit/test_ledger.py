"""The time ledger (harness/ledger.py): each part's wall time, the CPU time of its
process tree here, and the rest as waiting; harness/scenarios.py's runs report
their CPU time once they end."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from harness import ledger, scenarios

BUSY = [
    sys.executable,
    "-c",
    "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass",
]
IDLE = [sys.executable, "-c", "import time; time.sleep(0.5)"]


def test_a_busy_part_is_cpu_and_an_idle_one_is_waiting(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    assert ledger.run("busy", BUSY, path) == 0
    assert ledger.run("idle", IDLE, path) == 0
    busy, idle = ledger.entries(path)
    assert busy["part"] == "busy" and busy["ok"] is True
    assert float(busy["cpu_s"]) >= 0.3  # type: ignore[arg-type]
    assert float(idle["wall_s"]) >= 0.5  # type: ignore[arg-type]
    assert float(idle["cpu_s"]) < 0.3  # type: ignore[arg-type]


def test_the_exit_code_is_the_commands_and_a_failure_is_marked(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    assert ledger.run("fails", [sys.executable, "-c", "raise SystemExit(3)"], path) == 3
    (row,) = ledger.entries(path)
    assert row["ok"] is False
    assert "(failed or stopped)" in ledger.table([row])[-1]


def test_parts_together_run_at_once_each_recorded_and_printed_whole(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path, logs = tmp_path / "ledger.jsonl", tmp_path / "logs"
    # Each part sleeps 1 s: one after the other they would take 3 s.
    step = (
        "import sys, time; print(sys.argv[1], 'starts'); time.sleep(1); print(sys.argv[1], 'ends')"
    )
    started = time.monotonic()
    assert ledger.together(["a", "b", "c"], [sys.executable, "-c", step], path, logs) == 0
    assert time.monotonic() - started < 2.5
    assert sorted(str(row["part"]) for row in ledger.entries(path)) == ["a", "b", "c"]
    out = capfd.readouterr().out
    for name in "abc":
        # Its two lines together, between its own markers: not interleaved with another's.
        assert f"{name} starts\n{name} ends\n<== {name}" in out


def test_a_failed_part_together_fails_the_run_after_the_others_end(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path, logs = tmp_path / "ledger.jsonl", tmp_path / "logs"
    step = (
        "import sys, time\n"
        "if sys.argv[1] == 'bad': raise SystemExit(4)\n"
        "time.sleep(0.5); print('done')"
    )
    assert ledger.together(["bad", "good"], [sys.executable, "-c", step], path, logs) == 4
    rows = {str(row["part"]): row["ok"] for row in ledger.entries(path)}
    assert rows == {"bad": False, "good": True}
    out = capfd.readouterr().out
    assert "==> bad: FAILED (exit 4)" in out and "==> good: passed" in out
    assert "ledger: failed: bad (exit 4)" in out


def test_the_table_gives_the_waiting_share_and_says_when_cpu_is_unknown() -> None:
    lines = ledger.table(
        [
            {"part": "scenarios", "wall_s": 1000.0, "cpu_s": 250.0, "ok": True},
            {"part": "  cd-test", "wall_s": 900.0, "cpu_s": None, "ok": False},
        ]
    )
    assert lines[2].split() == ["scenarios", "1000s", "250s", "750s", "75", "%", "?"]
    assert lines[3].split()[:4] == ["cd-test", "900s", "?", "?"]


def test_the_reasons_of_failed_parts_come_after_the_table_and_long_lines_are_cut(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.jsonl"
    long = "E   AssertionError: " + "x" * 1000
    ledger.record("  default:release", 900.0, 100.0, False, path, why=["molecule exited 1", long])
    ledger.record("  nginx", 300.0, 50.0, True, path, why=["not kept for a passed part"])
    rows = ledger.entries(path)
    assert "why" not in rows[1], "a passed part keeps no reasons"
    out = ledger.table(rows) + ledger.reasons(rows)
    at = out.index("Why the failed parts failed (each one's whole log is printed above):")
    assert at > out.index(next(line for line in out if "nginx" in line)), "after the table"
    assert out[at + 1 :] == [
        "  default:release:",
        "    molecule exited 1",
        "    " + long[: ledger.REASON_WIDTH - 3] + "...",
    ]
    assert ledger.reasons([rows[1]]) == [], "nothing to say when nothing failed"


STAT = """cpu  {user} 0 {system} {idle} {iowait} 0 0 0 0 0
cpu0 1 2 3 4 5 6 7 8 9 10
intr 12345
"""


def test_the_machines_busy_share_counts_every_core_and_not_idle_or_iowait(
    tmp_path: Path,
) -> None:
    before = ledger.cpu_ticks(STAT.format(user=100, system=50, idle=800, iowait=50))
    assert before == (150, 1000)
    after = ledger.cpu_ticks(STAT.format(user=700, system=150, idle=1000, iowait=150))
    assert ledger.busy_share(before, after) == 0.7  # 700 busy of 1000 ticks
    assert ledger.busy_share(None, after) is None
    assert ledger.busy_share(after, after) is None  # no time passed
    with pytest.raises(ValueError, match="no aggregate cpu line"):
        ledger.cpu_ticks("intr 1\n")
    stat = tmp_path / "stat"
    stat.write_text(STAT.format(user=1, system=1, idle=1, iowait=1))
    assert ledger.sample(stat) == (2, 4)
    assert ledger.sample(tmp_path / "absent") is None


def test_each_part_records_how_busy_the_machine_was_and_the_table_shows_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.jsonl"
    assert ledger.run("busy", BUSY, path) == 0
    (row,) = ledger.entries(path)
    assert 0.0 <= float(row["machine"]) <= 1.0  # type: ignore[arg-type]
    line = ledger.table([{"part": "x", "wall_s": 10.0, "cpu_s": 2.0, "ok": True, "machine": 0.93}])
    assert line[-1].split() == ["x", "10s", "2s", "8s", "80", "%", "93", "%"]


def test_a_scenario_run_knows_its_cpu_time_when_it_ends() -> None:
    child = scenarios.Child(BUSY)
    while child.poll() is None:
        time.sleep(0.05)
    assert child.returncode == 0
    assert child.cpu_s is not None and child.cpu_s >= 0.3
