"""What the host exposes, seen from a second machine on the same network, and
that no secret reaches a playbook's output.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from conftest import HOST_CONTAINER, edge, run_playbook, wait_for

from harness import privilege

NETWORK = "archibald-test"
SCANNER_IMAGE = "archibald/python:12"  # harness/testbed.py builds it
PUBLIC_PORTS = {22, 80, 443}
# A stray listener on every address: the firewall, not the bind address, must stop it.
STRAY_PORT = 8081

SCAN = r"""
import asyncio, json, ssl, sys
HOST = sys.argv[1]
async def probe(port, sem, found, timeout):
    async with sem:
        try:
            _, w = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
            w.close()
            found.append(port)
        except (OSError, asyncio.TimeoutError):
            pass
# 3 s covers one lost SYN (Linux retransmits after 1 s) on a busy machine.
async def scan(ports, timeout=3.0, width=3000):
    sem, found = asyncio.Semaphore(width), []
    await asyncio.gather(*(probe(p, sem, found, timeout) for p in ports))
    return sorted(found)
def tls(version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old versions at all
    ctx.minimum_version = ctx.maximum_version = version
    try:
        import socket
        with socket.create_connection((HOST, 443), 5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.version()
    except (ssl.SSLError, OSError) as exc:
        return "refused: " + type(exc).__name__
V = ssl.TLSVersion
swept = asyncio.run(scan(range(1, 65536)))
# The public ports once more, one by one: a miss there is a busy scanner, and is
# reported as such, not as a closed port.
public = asyncio.run(scan([int(p) for p in sys.argv[2].split(",")], timeout=10, width=1))
print(json.dumps({"open": sorted(set(swept) | set(public)),
                  "missed_by_sweep": sorted(set(public) - set(swept)),
                  "tls": {v.name: tls(v) for v in (V.TLSv1, V.TLSv1_1, V.TLSv1_2, V.TLSv1_3)}}))
"""


def scan_from_neighbour() -> dict[str, Any]:
    result = subprocess.run(
        [
            *("docker", "run", "--rm", "-i", "--network", NETWORK, SCANNER_IMAGE),
            *("python3", "-", HOST_CONTAINER, ",".join(map(str, sorted(PUBLIC_PORTS)))),
        ],
        input=SCAN,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_only_ssh_http_and_https_answer_from_the_network(host: Any) -> None:
    host.check_output(
        f"systemd-run --unit=stray-listener --property=RuntimeMaxSec=300 "
        f"python3 -m http.server --bind 0.0.0.0 {STRAY_PORT}"
    )
    try:
        wait_for(
            f"the stray listener on 0.0.0.0:{STRAY_PORT} (without it the test proves nothing)",
            lambda: host.run(f"curl -fsS -o /dev/null http://127.0.0.1:{STRAY_PORT}/").rc == 0,
            30,
            0.5,
        )
        found = scan_from_neighbour()
    finally:
        host.run("systemctl stop stray-listener")
    print(
        f"\n[exposure] open TCP ports seen from {NETWORK}: {found['open']} (public ports the "
        f"full sweep missed and a single probe found: {found['missed_by_sweep']}); "
        f"TLS: {found['tls']}"
    )
    assert set(found["open"]) == PUBLIC_PORTS, found["open"]
    assert found["tls"]["TLSv1"].startswith("refused")
    assert found["tls"]["TLSv1_1"].startswith("refused")
    assert found["tls"]["TLSv1_2"] == "TLSv1.2"
    assert found["tls"]["TLSv1_3"] == "TLSv1.3"


def test_services_listen_on_loopback_only(host: Any) -> None:
    listeners = host.check_output("ss -Hltn | awk '{print $4}'").split()
    public = sorted(
        {a for a in listeners if not a.startswith(("127.", "[::1]", "::1", "[::ffff:127."))}
    )
    ports = {int(a.rsplit(":", 1)[1]) for a in public}
    print(f"\n[exposure] listeners not on loopback: {public}")
    assert ports <= PUBLIC_PORTS, public
    loopback = {int(a.rsplit(":", 1)[1]) for a in listeners if a.startswith("127.")}
    for ports, what in (({9090}, "Prometheus"), ({9100}, "node exporter"), ({8101, 8201}, "app")):
        assert ports & loopback, f"{what} does not listen on 127.0.0.1 ({ports}): {listeners}"


def test_metrics_are_not_served_through_nginx() -> None:
    codes = {path: edge(path)[0] for path in ("/metrics", "/api/../metrics", "/prometheus/")}
    print(f"\n[exposure] through nginx: {codes}")
    assert all(code in (403, 404) for code in codes.values()), codes


def test_no_secret_reaches_the_playbook_output() -> None:
    """A provision run with every secret set to a marker, verbose and with --diff,
    prints no marker. It leaves those values on the host (a Prometheus UI user
    among them): this is the scenario's last test, and destroy follows."""
    marker = "S3cret-marker-9b1f2e"
    secrets = {
        "grafana_admin_password": marker + "-grafana",
        "nginx_prometheus_basic_auth_users": [{"name": "ops", "password": marker + "-ui"}],
    }
    rc, out, _ = run_playbook("provision.yml", "-e", json.dumps(secrets), "--diff", "-v")
    leaks = [line for line in out.splitlines() if marker in line]
    print(f"\n[secrets] verbose --diff provision run: {len(leaks)} lines with a secret")
    assert rc == 0, out[-3000:]
    assert not leaks, "\n".join(leaks[:10])
    # The run did write the secrets (else it proves nothing): both tasks changed.
    for task in ("nginx : Add the Prometheus UI users", "grafana : Render grafana.ini from data"):
        section = out.split(f"TASK [{task}]", 1)[-1].split("TASK [", 1)[0]
        assert f"TASK [{task}]" in out and "changed:" in section, f"{task}:\n{section[:500]}"


# The bluegreen role's defaults (bluegreen_memory, bluegreen_pids_limit, ...),
# which the scenario does not override.
APP_MEMORY, APP_PIDS, APP_USER = 512 * 1024**2, 256, "10001"


def test_the_app_containers_run_with_least_privilege(host: Any) -> None:
    """Every running colour's container: every capability dropped and none to
    gain, the image's own user, a read-only root with a writable /tmp, and the
    memory (swap included) and process limits; seen by docker inspect and by a
    process inside it."""
    names = host.check_output(
        "docker ps --filter label=org.archibald.app=archibald "
        "--filter label=org.archibald.color --format '{{.Names}}'"
    ).split()
    assert names, "no colour's container runs"
    for name in names:
        seen = privilege.seen(host, name)
        expected = {**privilege.LEAST, "uid": APP_USER, "Memory": APP_MEMORY, "PidsLimit": APP_PIDS}
        assert seen == expected, f"{name}: {seen}"
    print(f"\n[least privilege] {len(names)} containers: {' '.join(sorted(names))}")
