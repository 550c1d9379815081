"""Molecule's hosts are reached through their containers' namespaces
(harness/ansible_plugins/vars/nsenter_hosts.py): only hosts that run, only as
root, never when asked not to; ansible-playbook really takes the plugin's
connection and ansible-inventory (which testinfra reads) really does not
(checked by running both against a Docker API that answers as Docker does)."""

from __future__ import annotations

import json
import os
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml

from harness import playbook
from harness.ansible_plugins.vars import nsenter_hosts

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MOLECULE_INVENTORY = {
    "all": {
        "hosts": {
            "backup-app": {"ansible_connection": nsenter_hosts.DOCKER},
            "backup-sftp": {"ansible_connection": nsenter_hosts.DOCKER},
            "localhost": {"ansible_connection": "local"},
        }
    }
}
# What Docker's API says of each container (GET /containers/<name>/json).
CONTAINERS = {
    "backup-app": {"State": {"Running": True, "Pid": 4242}},
    "backup-sftp": {"State": {"Running": False, "Pid": 0}},
}


class FakeDockerAPI(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.calls.append(self.path)  # type: ignore[attr-defined]
        name = self.path.split("/containers/", 1)[-1].split("/json", 1)[0]
        body: object
        if self.path.endswith("/version"):
            body, status = {"ApiVersion": "1.43", "Version": "fake"}, 200
        elif name in CONTAINERS:
            body, status = CONTAINERS[name], 200
        else:
            body, status = {"message": f"No such container: {name}"}, 404
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):  # type: ignore[no-untyped-def]
        request, _ = super().get_request()
        return request, ("local", 0)  # BaseHTTPRequestHandler wants a (host, port)


@pytest.fixture
def docker_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """DOCKER_HOST points at a fake Docker API; yields the paths it was asked for."""
    sock = tmp_path / "docker.sock"
    server = UnixHTTPServer(str(sock), FakeDockerAPI)
    server.calls = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    monkeypatch.delenv(nsenter_hosts.CONNECTION_ENV, raising=False)
    monkeypatch.delenv(nsenter_hosts.STRATEGY_ENV, raising=False)
    monkeypatch.setattr(nsenter_hosts, "_client", None)
    yield server.calls  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def test_a_running_host_is_entered_a_stopped_or_unknown_one_keeps_docker_exec(
    docker_api: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    hosts = MOLECULE_INVENTORY["all"]["hosts"]
    assert nsenter_hosts.override("backup-app", hosts["backup-app"]) == {
        "ansible_connection": nsenter_hosts.NSENTER,
        "ansible_nsenter_pid": 4242,
    }
    assert nsenter_hosts.override("backup-sftp", hosts["backup-sftp"]) == {}
    assert nsenter_hosts.override("gone", {"ansible_connection": nsenter_hosts.DOCKER}) == {}
    assert nsenter_hosts.override("localhost", hosts["localhost"]) == {}
    assert any(call.endswith("/containers/backup-app/json") for call in docker_api)


def test_not_root_or_asked_for_docker_keeps_molecules_connection(
    docker_api: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = MOLECULE_INVENTORY["all"]["hosts"]["backup-app"]
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv(nsenter_hosts.CONNECTION_ENV, "docker")
    assert nsenter_hosts.override("backup-app", app) == {}
    monkeypatch.delenv(nsenter_hosts.CONNECTION_ENV)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert nsenter_hosts.override("backup-app", app) == {}
    assert docker_api == []


def test_under_mitogens_strategy_a_docker_host_gets_the_connection_mitogen_takes_over(
    docker_api: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = MOLECULE_INVENTORY["all"]["hosts"]
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv(nsenter_hosts.STRATEGY_ENV, "mitogen_linear")
    mitogen = {"ansible_connection": nsenter_hosts.MITOGEN_DOCKER}
    assert nsenter_hosts.override("backup-app", hosts["backup-app"]) == mitogen
    assert nsenter_hosts.override("localhost", hosts["localhost"]) == {}
    assert docker_api == [], "Mitogen's connection needs no PID"
    monkeypatch.setenv(nsenter_hosts.CONNECTION_ENV, "nsenter")
    assert nsenter_hosts.override("backup-app", hosts["backup-app"])["ansible_connection"] == (
        nsenter_hosts.NSENTER
    )
    monkeypatch.setenv(nsenter_hosts.CONNECTION_ENV, "docker")
    assert nsenter_hosts.override("backup-app", hosts["backup-app"]) == {}


def molecule_env() -> dict[str, str]:
    config = yaml.safe_load((ROOT / ".config" / "molecule" / "config.yml").read_text())
    return {
        key: str(value).replace("${MOLECULE_PROJECT_DIRECTORY}", str(ROOT))
        for key, value in config["provisioner"]["env"].items()
    }


def test_molecules_configuration_turns_the_plugin_and_mitogens_strategy_on() -> None:
    env = molecule_env()
    assert os.path.realpath(env["ANSIBLE_VARS_PLUGINS"]) == nsenter_hosts.PLUGIN_DIR
    assert env["ANSIBLE_STRATEGY"] == "mitogen_linear"
    assert (Path(env["ANSIBLE_STRATEGY_PLUGINS"]) / "mitogen_linear.py").is_file()


def test_mitogens_strategy_takes_over_docker_only_and_runs_controller_tasks_the_usual_way(
    tmp_path: Path,
) -> None:
    """Mitogen's own `local` context failed Molecule's create step (its async
    docker_container tasks) on this machine: the strategy here leaves `local`, `ssh`
    and every other connection to Ansible. A play on the controller, with an async
    task as Molecule's create has, passes under it."""
    play = tmp_path / "local.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "ansible.builtin.command": "true",
                            "async": 30,
                            "poll": 0,
                            "register": "job",
                            "changed_when": False,
                        },
                        {
                            "ansible.builtin.async_status": {"jid": "{{ job.ansible_job_id }}"},
                            "register": "done",
                            "until": "done is finished",
                            "retries": 20,
                            "delay": 1,
                        },
                    ],
                }
            ]
        )
    )
    env = dict(os.environ, **{k: v for k, v in molecule_env().items() if "STRATEGY" in k})
    env["ANSIBLE_ASYNC_DIR"] = str(tmp_path / "async")
    # Molecule's inventory names localhost with the local connection.
    inventory = tmp_path / "inventory"
    inventory.write_text(
        "localhost ansible_connection=local"
        " ansible_python_interpreter={{ ansible_playbook_python }}\n"
    )
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inventory), str(play)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Use of strategy plugins not included in ansible.builtin" in done.stderr, done.stderr
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import mitogen_linear, "
        "ansible_mitogen.strategy as s; print(s.REDIRECTED_CONNECTION_PLUGINS)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code, env["ANSIBLE_STRATEGY_PLUGINS"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.strip() == "('docker',)", shown


@pytest.mark.skipif(os.geteuid() != 0, reason="nsenter needs root; CI runs as root")
def test_ansible_playbook_takes_the_plugins_connection_and_ansible_inventory_does_not(
    docker_api: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = tmp_path / "ansible_inventory.yml"
    inventory.write_text(yaml.safe_dump(MOLECULE_INVENTORY))
    # debug runs on the controller: no connection is opened, the variables are shown.
    play = tmp_path / "show.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "backup-app:backup-sftp",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "ansible.builtin.debug": {
                                "msg": "{{ inventory_hostname }} "
                                "{{ ansible_connection }} {{ ansible_nsenter_pid | default(0) }}"
                            }
                        }
                    ],
                }
            ]
        )
    )
    monkeypatch.setenv("ANSIBLE_VARS_PLUGINS", nsenter_hosts.PLUGIN_DIR)
    monkeypatch.setenv("MOLECULE_INVENTORY_FILE", str(inventory))
    assert playbook.via() == "nsenter"
    env = playbook.env()
    out = subprocess.run(
        [*playbook.command(play)], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    assert f"backup-app {nsenter_hosts.NSENTER} 4242" in out, out
    assert f"backup-sftp {nsenter_hosts.DOCKER} 0" in out, out
    listed = subprocess.run(
        [str(BIN / "ansible-inventory"), "-i", str(inventory), "--host", "backup-app"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(listed)["ansible_connection"] == nsenter_hosts.DOCKER


def test_without_the_plugin_the_tests_say_docker_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("ANSIBLE_VARS_PLUGINS", raising=False)
    assert playbook.via() == "docker exec"
