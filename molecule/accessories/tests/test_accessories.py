"""Verify role `accessories`: a real Redis and its exporter as shared services.

Both come from the harness's image of Debian's packages (harness/images/redis),
declared in host_vars/accessories-deb12.yml. The tests run playbooks the way
an operator does (ansible-playbook against the scenario's inventory) and
print what they measured. They run in file order: each leaves the services
as the declared configuration has them.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.parse
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from harness import playbook, privilege  # noqa: E402
from harness.wait import until  # noqa: E402

SCENARIO = Path(__file__).resolve().parents[1]
HOST = "accessories-deb12"
DECLARED = yaml.safe_load((SCENARIO / "host_vars" / f"{HOST}.yml").read_text())
MARKER = DECLARED["accessories_secret_env"]["redis"]["REDIS_PASSWORD"]
REDIS, EXPORTER = "archibald-redis", "archibald-redis-exporter"
STARTED = time.monotonic()


# Every wait goes through harness/wait.py; this file's default bound and interval.
_poll = partial(until, timeout=60, interval=0.5)


def manage(*extra: str) -> tuple[int, str, float]:
    return playbook.run("accessories.yml", *extra, timeout=600)


def rerun_role(*extra: str) -> tuple[int, str, float]:
    """The scenario's converge, the accessories role's tasks only (Docker, Prometheus are set)."""
    return playbook.run(SCENARIO / "converge.yml", "--tags", "accessories", *extra, timeout=600)


def inspect(host: Any, name: str) -> dict[str, Any]:
    return json.loads(host.check_output(f"docker inspect {name}"))[0]  # type: ignore[no-any-return]


def started_at(host: Any, name: str) -> str:
    return host.check_output(f"docker inspect -f '{{{{.State.StartedAt}}}}' {name}")  # type: ignore[no-any-return]


def redis_cli(host: Any, command: str) -> str:
    """One redis-cli command (words without quotes) with the password from the container."""
    return host.check_output(  # type: ignore[no-any-return]
        f"docker exec {REDIS} sh -c 'REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli -p 6379 {command}'"
    )


def healthy(host: Any, name: str) -> bool:
    state = inspect(host, name)["State"]
    return bool(state["Running"] and state.get("Health", {}).get("Status") == "healthy")


def _get(host: Any, url: str) -> str:
    """The body at a URL, fetched inside the host (it has python3, not curl)."""
    code = (
        "import sys, urllib.request; "
        "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
    )
    return host.run("python3 -c %s %s", code, url).stdout  # type: ignore[no-any-return]


def metric(host: Any, url: str, name: str) -> str | None:
    for line in _get(host, url).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return line.split()[-1]
    return None


def prom_query(host: Any, query: str) -> list[dict[str, Any]]:
    out = _get(host, "http://127.0.0.1:9090/api/v1/query?query=" + urllib.parse.quote(query))
    return json.loads(out)["data"]["result"] if out else []  # type: ignore[no-any-return]


def test_redis_runs_healthy_uncoloured_with_its_limits(host: Any) -> None:
    doc = _poll("Redis healthy", lambda: healthy(host, REDIS) and inspect(host, REDIS))
    labels = doc["Config"]["Labels"]
    print(
        f"\n[redis] {doc['State']['Health']['Status']}, restart policy "
        f"{doc['HostConfig']['RestartPolicy']['Name']}, memory {doc['HostConfig']['Memory']} B, "
        f"network {doc['HostConfig']['NetworkMode']}, labels {labels}"
    )
    assert labels.get("org.archibald.accessory") == "redis"
    assert "org.archibald.color" not in labels and "org.archibald.app" not in labels
    assert doc["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert doc["HostConfig"]["Memory"] == 128 * 1024 * 1024
    assert doc["HostConfig"]["NetworkMode"] == "host"
    assert doc["Config"]["Healthcheck"]["Test"][0] == "CMD-SHELL"
    # The release engine lists the app's containers by label: it never sees these.
    assert host.check_output("docker ps -q --filter label=org.archibald.app") == ""


# Every service: the hardened baseline, limits on memory and processes, and the
# image's own user (compared with what `id -u` says inside).
LEAST = {**privilege.LEAST, "PidsLimit": 256}


def test_each_service_runs_with_least_privilege(host: Any) -> None:
    """No capability, none to gain, the image's own user (redis), a read-only root
    with /tmp, limits on memory (swap included) and processes, no Docker socket."""
    redis_uid = host.check_output(f"docker exec {REDIS} id -u")
    for name in (REDIS, EXPORTER):
        seen = privilege.seen(host, name)
        print(f"\n[least privilege] {name}: {seen}")
        assert seen["Memory"] > 0, name
        assert seen == {**LEAST, "uid": redis_uid, "Memory": seen["Memory"]}, name
    assert redis_uid != "0"


def test_a_service_gets_back_only_the_capabilities_it_declares(host: Any) -> None:
    """A probe from an image that runs as root (the role tests' Python image, a web
    server), declared with cap_add [NET_BIND_SERVICE] and read_only false and
    started the way the role starts every service: root inside holds that one
    capability (bit 10) and can never gain another (its bounding set). Docker gives
    a non-root user no effective capability, so cap_add is for a root service."""
    probe = {
        "probe": {
            "image": "registry:5000/testbed/python:12",
            "port": 6391,
            "command": ["python3", "-m", "http.server", "6391", "--bind", "127.0.0.1"],
            "user": "0",
            "cap_add": ["NET_BIND_SERVICE"],
            "read_only": False,
            "pids": 32,
        }
    }
    only = {"accessories_services": probe, "accessories_secret_env": {}}
    rc, out, _ = manage("-e", json.dumps(only), "-e", "accessory=probe")
    try:
        assert rc == 0, out[-3000:]
        seen = privilege.seen(host, "archibald-probe")
        print(f"\n[cap_add] archibald-probe: {seen}")
    finally:
        manage("-e", "accessory=probe", "-e", "accessory_state=absent")
    assert seen["CapAdd"] == ["CAP_NET_BIND_SERVICE"] or seen["CapAdd"] == ["NET_BIND_SERVICE"]
    assert seen["CapEff"] == seen["CapBnd"] == f"{1 << 10:016x}", seen
    assert (seen["uid"], seen["NoNewPrivs"], seen["PidsLimit"]) == ("0", "1", 32), seen
    assert not seen["root read-only"]
    assert host.run("docker inspect archibald-probe").rc == 1


def test_listens_on_loopback_only(host: Any) -> None:
    listeners = host.check_output("ss -Hltn '( sport = :6379 or sport = :9121 )'")
    local = sorted({line.split()[3] for line in listeners.splitlines()})
    address = next(a for a in host.interface("eth0").addresses if "." in a)
    refused = {}
    for port in (6379, 9121):
        with socket.socket() as sock:
            sock.settimeout(3)
            refused[port] = sock.connect_ex((address, port)) != 0
    print(f"\n[loopback] listening: {local}; from outside to {address}: refused {refused}")
    assert local == ["127.0.0.1:6379", "127.0.0.1:9121"]
    assert all(refused.values())
    assert redis_cli(host, "ping") == "PONG"


def test_secrets_come_from_a_root_only_file_and_never_the_command_line(host: Any) -> None:
    env_file = host.file("/etc/archibald/accessories/redis.env")
    assert (env_file.user, env_file.group, env_file.mode) == ("root", "root", 0o600)
    assert host.file("/etc/archibald/accessories").mode == 0o700
    doc = inspect(host, REDIS)
    assert MARKER not in json.dumps([doc["Args"], doc["Config"]["Cmd"], doc["Path"]])
    assert MARKER not in host.check_output("ps -eo args")
    # Without the password Redis refuses: the secret is what lets the clients in.
    refused = host.check_output(f"docker exec {REDIS} redis-cli -p 6379 ping")
    print(f"\n[secrets] {env_file.path} {oct(env_file.mode)}; without the password: {refused}")
    assert refused.startswith("NOAUTH")


def test_exporter_answers_and_prometheus_scrapes_it(host: Any) -> None:
    started = time.monotonic()
    assert _poll(
        "redis_up 1 from the exporter",
        lambda: metric(host, "http://127.0.0.1:9121/metrics", "redis_up") == "1",
    )
    up = _poll(
        "Prometheus scraping job accessories",
        lambda: [r for r in prom_query(host, 'up{job="accessories"}') if r["value"][1] == "1"],
        timeout=60,
    )
    redis_up = _poll(
        "redis_up in Prometheus",
        lambda: [r for r in prom_query(host, "redis_up") if r["value"][1] == "1"],
        timeout=60,
    )
    print(
        f"\n[metrics] exporter redis_up 1; Prometheus: up{{job=accessories}} "
        f"{up[0]['metric']}, redis_up {redis_up[0]['metric']} "
        f"after {time.monotonic() - started:.1f} s"
    )
    assert up[0]["metric"]["accessory"] == "redis-exporter"


def test_a_rerun_changes_nothing_and_restarts_nothing(host: Any) -> None:
    before = {name: started_at(host, name) for name in (REDIS, EXPORTER)}
    rc, out, seconds = rerun_role()
    assert rc == 0, out[-3000:]
    after = {name: started_at(host, name) for name in (REDIS, EXPORTER)}
    print(f"\n[rerun] {seconds:.1f} s; StartedAt before {before}, after {after}")
    assert "changed=0" in out, out[-3000:]
    assert before == after
    assert "Left running as they were: redis, redis-exporter." in " ".join(out.split())


def test_data_survives_the_container_being_recreated(host: Any) -> None:
    value = f"kept-{int(time.time())}"
    assert redis_cli(host, f"set survivor {value}") == "OK"
    host.check_output(f"docker stop -t 10 {REDIS} && docker rm {REDIS}")
    rc, out, seconds = manage("-e", "accessory=redis")
    assert rc == 0, out[-3000:]
    _poll("Redis healthy again", lambda: healthy(host, REDIS))
    got = redis_cli(host, "get survivor")
    volumes = host.check_output("docker volume ls -q --filter label=org.archibald.accessory=redis")
    print(
        f"\n[volume] recreated by playbooks/accessories.yml in {seconds:.1f} s; "
        f"read back {got!r} from {volumes}"
    )
    assert got == value
    assert volumes == "archibald-redis-data"


def test_a_changed_configuration_restarts_that_service_only_and_prints_no_secret(host: Any) -> None:
    before = {name: started_at(host, name) for name in (REDIS, EXPORTER)}
    changed = json.loads(json.dumps(DECLARED))
    changed["accessories_services"]["redis"]["env"]["ACCESSORY_GENERATION"] = "2"
    changed["accessories_secret_env"]["redis"]["EXTRA_TOKEN"] = MARKER + "-extra"
    rc, out, seconds = rerun_role("-e", json.dumps(changed), "-v", "--diff")
    assert rc == 0, out[-3000:]
    after = {name: started_at(host, name) for name in (REDIS, EXPORTER)}
    leaks = [line for line in out.splitlines() if MARKER in line]
    seen = host.check_output(f"docker exec {REDIS} printenv EXTRA_TOKEN")
    flat = " ".join(out.split())
    print(
        f"\n[config change] verbose --diff run {seconds:.1f} s: redis restarted "
        f"{before[REDIS] != after[REDIS]}, exporter restarted "
        f"{before[EXPORTER] != after[EXPORTER]}; {len(leaks)} output lines with the secret; "
        f"the container has the new secret: {seen == MARKER + '-extra'}"
    )
    assert not leaks, "\n".join(leaks[:5])
    assert before[REDIS] != after[REDIS]
    assert before[EXPORTER] == after[EXPORTER]
    assert (
        "recreated because their configuration changed: redis. "
        "Left running as they were: redis-exporter." in flat
    )
    assert seen == MARKER + "-extra"
    _poll("Redis healthy after the change", lambda: healthy(host, REDIS))
    # The next test's accessory_state=started puts the declared configuration back.


def test_stop_start_and_restart_one_service_on_purpose(host: Any) -> None:
    exporter = started_at(host, EXPORTER)
    rc, out, stop_s = manage("-e", "accessory=redis", "-e", "accessory_state=stopped")
    assert rc == 0, out[-3000:]
    assert not inspect(host, REDIS)["State"]["Running"]
    assert _poll(
        "the exporter seeing Redis down",
        lambda: metric(host, "http://127.0.0.1:9121/metrics", "redis_up") == "0",
    )
    # Redis still has the previous test's changed configuration: started applies the
    # inventory's again (the extra secret is gone) and returns once Redis is healthy.
    rc, out, start_s = manage("-e", "accessory=redis", "-e", "accessory_state=started")
    assert rc == 0, out[-3000:]
    assert healthy(host, REDIS), "the role returns only once the service is healthy"
    assert host.run(f"docker exec {REDIS} printenv EXTRA_TOKEN").rc == 1
    assert host.check_output(f"docker exec {REDIS} printenv ACCESSORY_GENERATION") == "1"
    before = started_at(host, REDIS)
    rc, out, restart_s = manage("-e", "accessory=redis", "-e", "accessory_state=restarted")
    assert rc == 0, out[-3000:]
    assert "Restarted on purpose: redis." in " ".join(out.split())
    assert started_at(host, REDIS) != before
    assert started_at(host, EXPORTER) == exporter, "acting on redis touched the exporter"
    assert redis_cli(host, "get survivor").startswith("kept-")
    assert _poll(
        "the exporter seeing Redis again",
        lambda: metric(host, "http://127.0.0.1:9121/metrics", "redis_up") == "1",
    )
    print(
        f"\n[manage] playbooks/accessories.yml: stopped in {stop_s:.1f} s, started (healthy) in "
        f"{start_s:.1f} s, restarted in {restart_s:.1f} s; the exporter untouched"
    )


@pytest.mark.parametrize(
    ("services", "expected"),
    [
        (
            {"cache": {"image": "registry:5000/testbed/redis:12", "port": 8101}},
            "accessories_services.cache.port is 8101, which bluegreen_ports.blue.backend "
            "(the app) already uses",
        ),
        (
            {"cache": {"image": "registry:5000/testbed/redis:12", "port": 9090, "helth": {}}},
            "unknown field(s) helth",
        ),
    ],
    ids=["app-port", "typo"],
)
def test_bad_declarations_are_refused_before_anything_runs(
    host: Any, services: dict[str, Any], expected: str
) -> None:
    before = started_at(host, REDIS)
    rc, out, _ = manage(
        "-e", json.dumps({"accessories_services": services}), "-e", "accessory=cache"
    )
    assert rc == 2, out[-3000:]
    assert expected in " ".join(out.split()), out[-3000:]
    assert started_at(host, REDIS) == before


def test_a_service_listening_past_loopback_is_stopped_and_named(host: Any) -> None:
    leaky = {
        "leaky": {
            "image": "registry:5000/testbed/redis:12",
            "port": 6390,
            "command": ["redis-start", "--bind", "0.0.0.0", "--port", "6390"],
        }
    }
    only = {"accessories_services": leaky, "accessories_secret_env": {}}
    rc, out, _ = manage("-e", json.dumps(only), "-e", "accessory=leaky")
    running = inspect(host, "archibald-leaky")["State"]["Running"]
    print(f"\n[leaky] rc={rc}; still running after the refusal: {running}")
    assert rc == 2, out[-3000:]
    assert "0.0.0.0:6390" in out
    assert "listened past loopback and was stopped" in " ".join(out.split())
    assert not running
    # Taken out again on purpose, as for a service dropped from the inventory.
    rc, out, _ = manage("-e", "accessory=leaky", "-e", "accessory_state=absent")
    assert rc == 0, out[-3000:]
    assert host.run("docker inspect archibald-leaky").rc == 1
    assert not host.file("/etc/archibald/accessories/leaky.env").exists


def test_print_the_wall_time() -> None:
    print(f"\n[accessories] verify took {time.monotonic() - STARTED:.0f} s")
