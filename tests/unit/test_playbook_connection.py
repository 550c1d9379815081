"""A test's playbook reaches Molecule's hosts through their containers' namespaces
(harness/playbook.py): only hosts that run, only as root, never when asked not
to, and Ansible really takes the second inventory's connection over Molecule's
(checked with ansible-inventory, not assumed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import playbook

MOLECULE_INVENTORY = """\
all:
  hosts:
    backup-app: &app
      ansible_connection: community.docker.docker
    backup-sftp: &sftp
      ansible_connection: community.docker.docker
    localhost:
      ansible_connection: local
archibald:
  hosts:
    backup-app: *app
sftp:
  hosts:
    backup-sftp: *sftp
"""


@pytest.fixture
def molecule_inventory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "inventory" / "ansible_inventory.yml"
    path.parent.mkdir()
    path.write_text(MOLECULE_INVENTORY)
    monkeypatch.setenv("MOLECULE_INVENTORY_FILE", str(path))
    return path


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `docker` that answers inspect as Docker does: a running host has its init's
    PID, a stopped one 0."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(
        "#!/bin/sh\n"
        'echo "$@" >> "$(dirname "$0")/calls"\n'
        "echo /backup-app 4242\n"
        "echo /backup-sftp 0\n"
    )
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv(playbook.CONNECTION_ENV, raising=False)
    return bin_dir


def test_only_the_docker_hosts_of_molecules_inventory_are_considered(
    molecule_inventory: Path,
) -> None:
    assert playbook.docker_hosts(str(molecule_inventory)) == ["backup-app", "backup-sftp"]


def test_a_running_host_is_entered_a_stopped_one_keeps_docker_exec(fake_docker: Path) -> None:
    overrides = playbook.nsenter_overrides(["backup-app", "backup-sftp"])
    assert overrides == {
        "backup-app": {"ansible_connection": playbook.NSENTER, "ansible_nsenter_pid": 4242}
    }
    assert "inspect" in (fake_docker / "calls").read_text()


def test_not_root_or_asked_for_docker_keeps_molecules_connection(
    fake_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(playbook.CONNECTION_ENV, "docker")
    assert playbook.nsenter_overrides(["backup-app"]) == {}
    monkeypatch.delenv(playbook.CONNECTION_ENV)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert playbook.nsenter_overrides(["backup-app"]) == {}
    assert not (fake_docker / "calls").exists()


def test_ansible_takes_the_second_inventorys_connection(
    molecule_inventory: Path, fake_docker: Path
) -> None:
    args = playbook.command("release.yml", "-e", "app_version=v2")
    assert args[:3] == ["ansible-playbook", "-i", str(molecule_inventory)]
    assert args[3] == "-i" and args[4] != str(molecule_inventory)
    sources = ["-i", args[2], "-i", args[4]]
    ansible_inventory = Path(sys.executable).parent / "ansible-inventory"

    def host(name: str) -> dict[str, object]:
        out = subprocess.run(
            [str(ansible_inventory), *sources, "--host", name],
            capture_output=True,
            text=True,
            check=True,
            env=playbook.env(),
        ).stdout
        return dict(json.loads(out))

    assert host("backup-app")["ansible_connection"] == playbook.NSENTER
    assert host("backup-app")["ansible_nsenter_pid"] == 4242
    assert host("backup-sftp")["ansible_connection"] == playbook.DOCKER
