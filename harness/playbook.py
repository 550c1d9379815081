"""Run this repository's playbooks from a Molecule scenario's tests.

The one owner of how a test runs a playbook against its scenario's hosts: the
inventory Molecule wrote (MOLECULE_INVENTORY_FILE, set by `molecule verify`),
the repository's ansible.cfg, and plain output (no colour codes) for the
tests to read.

How the playbook reaches a host: Molecule's inventory says `docker exec`
(community.docker.docker), and its own steps and testinfra keep that. A
playbook run from here enters the host container's namespaces instead
(community.docker.nsenter, from the same collection): the same modules run in
the same host with the same files, processes and network, without a docker
CLI, a runc exec and a shell per task (README, "Ansible's speed", has the
figures). It needs root; otherwise, for a host that is not running, or with
ARCHIBALD_TEST_CONNECTION=docker, Molecule's connection stays.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOKS = ROOT / "playbooks"
CONNECTION_ENV = "ARCHIBALD_TEST_CONNECTION"
DOCKER = "community.docker.docker"
NSENTER = "community.docker.nsenter"
_SCRATCH: str | None = None  # this process's connection inventories, removed at its exit


def inventory() -> str:
    path = os.environ.get("MOLECULE_INVENTORY_FILE")
    if not path:
        pytest.fail("MOLECULE_INVENTORY_FILE is not set: run these tests through `molecule verify`")
    return path


def docker_hosts(path: str) -> list[str]:
    """The hosts Molecule's inventory file reaches with `docker exec`."""
    hosts = (yaml.safe_load(Path(path).read_text()) or {}).get("all", {}).get("hosts") or {}
    return sorted(
        name
        for name, hostvars in hosts.items()
        if (hostvars or {}).get("ansible_connection") == DOCKER
    )


def nsenter_overrides(hosts: list[str]) -> dict[str, dict[str, object]]:
    """Each running host's connection through its container's namespaces (the PID of
    its init, read now: a restarted host has a new one); {} when not root or
    when ARCHIBALD_TEST_CONNECTION=docker."""
    if not hosts or os.geteuid() != 0 or os.environ.get(CONNECTION_ENV, "nsenter") == "docker":
        return {}
    result = subprocess.run(
        ["docker", "inspect", "--format", "{{.Name}} {{.State.Pid}}", *hosts],
        capture_output=True,
        text=True,
        check=False,
    )
    overrides: dict[str, dict[str, object]] = {}
    for line in result.stdout.splitlines():
        name, _, pid = line.strip().lstrip("/").partition(" ")
        if name in hosts and pid.isdigit() and int(pid) > 0:
            overrides[name] = {"ansible_connection": NSENTER, "ansible_nsenter_pid": int(pid)}
    return overrides


def connection_inventory() -> list[str]:
    """A second inventory source (`-i`) that switches the running hosts to nsenter;
    a later source's host variables replace the earlier's."""
    overrides = nsenter_overrides(docker_hosts(inventory()))
    if not overrides:
        return []
    global _SCRATCH
    if _SCRATCH is None:
        _SCRATCH = tempfile.mkdtemp(prefix="archibald-connection-")
        atexit.register(shutil.rmtree, _SCRATCH, True)
    with tempfile.NamedTemporaryFile("w", dir=_SCRATCH, suffix=".yml", delete=False) as handle:
        yaml.safe_dump({"all": {"hosts": overrides}}, handle)
    return ["-i", handle.name]


def command(playbook: str | Path, *extra: str, limit: str | None = None) -> list[str]:
    """ansible-playbook for playbooks/<name> (or a scenario's own file, given as a Path),
    limited to `limit` when given."""
    path = playbook if isinstance(playbook, Path) else PLAYBOOKS / playbook
    where = ["--limit", limit] if limit else []
    return [
        "ansible-playbook",
        "-i",
        inventory(),
        *connection_inventory(),
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
    via = "nsenter" if args.count("-i") > 1 else "docker exec"
    print(
        f"\n[playbook] {Path(playbook).name} {' '.join(extra)[:120]}{where} -> "
        f"rc={result.returncode} in {elapsed:.1f} s ({via})"
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
