"""Verify role `docker`: engine settings live, registry pulls work, service enabled."""

from __future__ import annotations

import json

import pytest

from harness.wait import until

PROBE = "molecule-docker-probe"
IMAGE = "registry:5000/testbed/python:12"


def _docker_json(host, args: str) -> dict:
    out = host.check_output(f"docker {args}")
    return json.loads(out)


def test_engine_is_enabled_and_running(host) -> None:
    service = host.service("docker")
    assert service.is_enabled
    assert service.is_running


def test_daemon_json_is_rendered_from_data(host) -> None:
    daemon = host.file("/etc/docker/daemon.json")
    assert daemon.mode == 0o644
    config = json.loads(daemon.content_string)
    assert config["live-restore"] is True
    assert config["no-new-privileges"] is True
    assert config["log-driver"] == "json-file"
    assert config["log-opts"] == {"max-size": "10m", "max-file": "5"}
    assert "registry:5000" in config["insecure-registries"]


def test_docker_info_shows_live_settings(host) -> None:
    info = _docker_json(host, "info --format '{{json .}}'")
    assert info["LiveRestoreEnabled"] is True
    assert info["LoggingDriver"] == "json-file"
    assert "registry:5000" in json.dumps(info["RegistryConfig"])


def test_engine_metrics_listen_on_loopback_only(host) -> None:
    assert host.socket("tcp://127.0.0.1:9323").is_listening
    assert not host.socket("tcp://0.0.0.0:9323").is_listening


def test_python_sdk_for_community_docker(host) -> None:
    host.check_output("python3 -c 'import docker'")


@pytest.fixture()
def probe(host):
    host.run(f"docker rm -f {PROBE}")
    host.check_output(f"docker pull -q {IMAGE}")
    host.check_output(
        f"docker run -d --name {PROBE} -p 127.0.0.1:18080:8000 {IMAGE} "
        "python3 -m http.server 8000 --bind 0.0.0.0"
    )
    yield PROBE
    host.run(f"docker rm -f {PROBE}")


def test_container_from_local_registry_answers(host, probe: str) -> None:
    until(
        "the probe container to answer 200",
        lambda: (
            host.run(
                "curl -fsS -o /dev/null -w '%{http_code}' http://127.0.0.1:18080/"
            ).stdout.strip()
            == "200"
        ),
        30,
    )
    fmt = "'{{json .HostConfig.LogConfig}}'"
    log_config = _docker_json(host, f"inspect --format {fmt} {probe}")
    assert log_config == {"Type": "json-file", "Config": {"max-file": "5", "max-size": "10m"}}


def test_a_container_gains_no_privileges_by_default(host, probe: str) -> None:
    """daemon.json's no-new-privileges: a process in a container started with no
    option of its own runs with no_new_privs, so a setuid file gives it nothing."""
    status = host.check_output(f"docker exec {probe} grep NoNewPrivs /proc/1/status")
    assert status.split() == ["NoNewPrivs:", "1"], status
