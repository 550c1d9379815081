"""scripts/ci-playbook.sh: a CD step's playbook, its output on stdout and in a log,
stops when GitHub cancels the step (SIGINT to the step's shell) and is waited for."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "scripts" / "ci-playbook.sh"
# A stand-in for ansible-playbook: says it started, then runs for `seconds`; on
# SIGINT it says so and ends with 3 after a moment (Ansible finishes the task in
# hand); with "stubborn" it goes on after SIGINT. It leaves a mark of how it ended.
PLAYBOOK = """
import pathlib, signal, sys, time
mark, seconds, stubborn = pathlib.Path(sys.argv[1]), float(sys.argv[2]), len(sys.argv) > 3
def interrupted(sig, _frame):
    print("got " + signal.Signals(sig).name, flush=True)
    if stubborn:
        return
    time.sleep(0.3)
    mark.write_text("stopped")
    sys.exit(3)
signal.signal(signal.SIGINT, interrupted)
print("started", flush=True)
end = time.monotonic() + seconds
while time.monotonic() < end:
    time.sleep(0.05)
mark.write_text("ran to the end")
"""


def default_sigint() -> None:
    """GitHub's step shell starts with SIGINT's default action; a test run started in
    the background of a script (`.ci/run &`) inherits it ignored, and a shell cannot
    trap a signal ignored at its start. Start each shell as GitHub does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(tmp_path: Path, *command: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["bash", str(WRAPPER), str(tmp_path / "run.log"), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    return proc


def playbook(tmp_path: Path, seconds: float, *extra: str) -> list[str]:
    script = tmp_path / "playbook.py"
    script.write_text(PLAYBOOK)
    return [sys.executable, str(script), str(tmp_path / "mark"), str(seconds), *extra]


def wait_for_start(tmp_path: Path) -> None:
    deadline = time.monotonic() + 10
    log = tmp_path / "run.log"
    while not log.is_file() or "started" not in log.read_text():
        assert time.monotonic() < deadline, "the stand-in playbook never started"
        time.sleep(0.05)


def test_output_goes_to_stdout_and_the_log_and_the_status_is_the_playbooks(
    tmp_path: Path,
) -> None:
    proc = start(tmp_path, "sh", "-c", "echo one; echo two >&2; exit 4")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 4
    assert out.split() == ["one", "two"]
    assert (tmp_path / "run.log").read_text().split() == ["one", "two"]


def test_a_cancel_stops_the_playbook_and_waits_for_it(tmp_path: Path) -> None:
    proc = start(tmp_path, *playbook(tmp_path, 30))
    wait_for_start(tmp_path)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)  # what GitHub sends the step's shell
    out, err = proc.communicate(timeout=20)
    took = time.monotonic() - sent
    assert proc.returncode == 3, (out, err)
    assert (tmp_path / "mark").read_text() == "stopped"  # ended before the wrapper did
    assert "got SIGINT" in out and "asking python" in err and "SIGINT" in err
    assert took < 7.5, f"{took:.1f} s: GitHub sends SIGTERM after 7.5 s"


def test_a_second_signal_is_passed_on_as_sigterm(tmp_path: Path) -> None:
    proc = start(tmp_path, *playbook(tmp_path, 30, "stubborn"))
    wait_for_start(tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)  # GitHub's second signal, 7.5 s later
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM, (out, err)
    assert "got SIGINT" in out and "SIGTERM to python" in err
    assert not (tmp_path / "mark").exists()  # stopped, not run to the end


def test_the_plain_pipeline_cd_yml_had_lets_the_playbook_run_on(tmp_path: Path) -> None:
    """Why the wrapper exists: `ansible-playbook ... | tee log` in the step's shell.
    The shell gets GitHub's SIGINT, the playbook does not, and runs to its end."""
    command = " ".join(playbook(tmp_path, 2))
    proc = subprocess.Popen(
        ["bash", "-eo", "pipefail", "-c", f"{command} | tee {tmp_path / 'run.log'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    wait_for_start(tmp_path)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)
    assert (tmp_path / "mark").read_text() == "ran to the end"


def test_usage(tmp_path: Path) -> None:
    proc = start(tmp_path)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 2 and "usage: ci-playbook.sh" in err
