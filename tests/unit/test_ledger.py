"""The time ledger (harness/ledger.py): each part's wall time, the CPU time of its
process tree here, and the rest as waiting; harness/scenarios.py's runs report
their CPU time once they end."""

from __future__ import annotations

import sys
import time
from pathlib import Path

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


def test_the_table_gives_the_waiting_share_and_says_when_cpu_is_unknown() -> None:
    lines = ledger.table(
        [
            {"part": "scenarios", "wall_s": 1000.0, "cpu_s": 250.0, "ok": True},
            {"part": "  cd-test", "wall_s": 900.0, "cpu_s": None, "ok": False},
        ]
    )
    assert lines[2].split() == ["scenarios", "1000s", "250s", "750s", "75", "%"]
    assert lines[3].split()[:4] == ["cd-test", "900s", "?", "?"]


def test_a_scenario_run_knows_its_cpu_time_when_it_ends() -> None:
    child = scenarios.Child(BUSY)
    while child.poll() is None:
        time.sleep(0.05)
    assert child.returncode == 0
    assert child.cpu_s is not None and child.cpu_s >= 0.3
