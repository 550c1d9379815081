"""Run this repository's playbooks from a Molecule scenario's tests.

The one owner of how a test runs a playbook against its scenario's hosts: the
inventory Molecule wrote (MOLECULE_INVENTORY_FILE, set by `molecule verify`),
the repository's ansible.cfg, and plain output (no colour codes) for the
tests to read.

How the playbook reaches a host: Molecule's inventory says `docker exec`
(community.docker.docker); the vars plugin harness/ansible_plugins/vars/
nsenter_hosts.py, which Molecule's configuration turns on for converge,
idempotence and the tests alike, enters the host container's namespaces
instead. This module only says which way a run went.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from harness.ansible_plugins.vars import nsenter_hosts

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"


def inventory() -> str:
    path = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not path:
        pytest.fail("MOLECULE_INVENTORY_FILE is not set: run these tests through `molecule verify`")
    return path


def via() -> str:
    """How this process's playbooks reach the hosts: Mitogen or nsenter where the plugin is on."""
    plugins = os.environ.get("ANSIBLE_VARS_PLUGINS", "").split(os.pathsep)
    if nsenter_hosts.PLUGIN_DIR in map(os.path.realpath, plugins) and nsenter_hosts.wanted():
        return "mitogen" if nsenter_hosts.mitogen() else "nsenter"
    return "docker exec"


def command(playbook: str | Path, *extra: str, limit: str | None = None) -> list[str]:
    """ansible-playbook for playbooks/<name> (or a scenario's own file, given as a Path),
    limited to `limit` when given."""
    path = playbook if isinstance(playbook, Path) else PLAYBOOKS / playbook
    where = ["--limit", limit] if limit else []
    return [
        "ansible-playbook",
        "-i",
        inventory(),
        *where,
        str(path),
        *extra,
    ]


def env() -> dict[str, str]:
    return dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
    )


def run(
    playbook: str | Path, *extra: str, limit: str | None = None, timeout: float = 900
) -> tuple[int, str, float]:
    """Run a playbook (as command() names it); print and return (exit code, stdout +
    stderr, seconds)."""
    started = time.monotonic()
    args = command(playbook, *extra, limit=limit)
    result = subprocess.run(
        args,
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    elapsed = time.monotonic() - started
    where = f" on {limit}" if limit else ""
    print(
        f"\n[playbook] {Path(playbook).name} {' '.join(extra)[:120]}{where} -> "
        f"rc={result.returncode} in {elapsed:.1f} s ({via()})"
    )
    return result.returncode, result.stdout + result.stderr, elapsed


class Background(subprocess.Popen[str]):
    """A playbook running in the background, its output (stdout and stderr) going
    to an unnamed file rather than a pipe: a pipe that nobody reads while the
    test waits fills at 64 KiB, and the playbook then stops mid-run on its next
    write (a release under load retries, and prints, more). communicate() waits
    and returns the whole output (stderr within it)."""

    def __init__(self, args: list[str], **kwargs: Any) -> None:
        # Open as long as the object: communicate() reads it after the playbook ended.
        self.output = tempfile.TemporaryFile(  # noqa: SIM115
            mode="w+", encoding="utf-8", errors="replace"
        )
        super().__init__(args, stdout=self.output, stderr=subprocess.STDOUT, text=True, **kwargs)

    def kill_group(self) -> None:
        """SIGKILL the playbook and every process it forked (start() gives it a process
        group of its own), if it still runs: a test's way out of a hung run."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)

    def communicate(
        self, input: str | None = None, timeout: float | None = None
    ) -> tuple[str, str]:
        self.wait(timeout=timeout)
        self.output.seek(0)
        return self.output.read(), ""  # stderr is in the output


def start(playbook: str | Path, *extra: str, limit: str | None = None) -> Background:
    """Start a playbook (as command() names it) in the background, in its own process
    group (killable as a whole)."""
    return Background(
        command(playbook, *extra, limit=limit), cwd=ROOT, env=env(), start_new_session=True
    )


def failed_tasks(output: str, most: int = 30) -> str:
    """The task headers and the failure lines of an Ansible run's output (its last
    lines when none is marked): what a test's error shows of a run whose log CI does not
    keep."""
    lines = output.splitlines()
    keep: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith(("fatal:", "failed:", "ERROR!")) or "UNREACHABLE!" in line:
            task = next((t for t in reversed(lines[:i]) if t.startswith("TASK [")), "")
            keep += [task, *lines[i : i + 4]]
    return "\n".join((keep or lines)[-most:])
