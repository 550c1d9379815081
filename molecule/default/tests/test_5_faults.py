"""Faults the host must survive, each measured: the Docker engine restarting
under load, ten SIGTERM restarts of the app while jobs are submitted, a full
disk under the job database, the registry going away during a release, and a
reboot of the host (last: it is the most disruptive).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

from conftest import (
    HOST_CONTAINER,
    STATE_DIR,
    edge,
    hey,
    parse_hey,
    post_job,
    read_state,
    run_playbook,
    serving,
    wait_for,
)


def job_runs(job_ids: list[str]) -> dict[str, Any]:
    """Status and run count of each job, read through nginx."""
    found = {}
    for job_id in job_ids:
        status, body = edge(f"/api/jobs/{job_id}")
        found[job_id] = (body.get("status"), body.get("runs")) if status == 200 else (status, None)
    return found


def test_docker_engine_restart_drops_no_request(host: Any) -> None:
    def engine_pid() -> str:
        return str(host.check_output("systemctl show -p MainPID --value docker"))

    pid_before = engine_pid()
    load = hey(30)
    time.sleep(8)
    started = time.monotonic()
    host.check_output("systemctl restart docker")
    restart_s = time.monotonic() - started
    wait_for("the Docker engine", lambda: host.run("docker info").rc == 0, 60, 1)
    assert engine_pid() not in (pid_before, "0"), "dockerd was not restarted"
    out, _ = load.communicate(timeout=90)
    summary = parse_hey(out)
    failed = sum(n for code, n in summary["codes"].items() if code != 200) + summary["errors"]
    total = sum(summary["codes"].values()) + summary["errors"]
    print(
        f"\n[docker restart] engine restarted in {restart_s:.1f} s under "
        f"{summary['rps']:.0f} req/s: {failed} of {total} requests failed "
        f"(codes {summary['codes']}, connection errors {summary['errors']})"
    )
    assert total > 500, out[-2000:]
    assert failed == 0, out[-2000:]
    color, _ = serving()
    assert color == read_state(host)["active"]


def test_ten_sigterm_restarts_lose_no_job(host: Any) -> None:
    """The plan's Part A criterion on the live host: docker restart sends SIGTERM and
    waits for the drain; jobs are submitted all along through nginx."""
    active = read_state(host)["active"]
    container = f"archibald-backend-{active}"
    accepted: list[str] = []
    refused = 0
    stop = threading.Event()

    def submit() -> None:
        nonlocal refused
        while not stop.is_set():
            status, job_id = post_job(0.5)
            if status == 202 and job_id:
                accepted.append(job_id)
            else:
                refused += 1
            time.sleep(0.05)

    env = host.check_output(f"docker inspect -f '{{{{json .Config.Env}}}}' {container}")
    port = next(e.split("=", 1)[1] for e in json.loads(env) if e.startswith("APP_PORT="))
    submitter = threading.Thread(target=submit, daemon=True)
    submitter.start()
    since = host.check_output("date -u +%Y-%m-%dT%H:%M:%SZ")
    try:
        for _ in range(10):
            time.sleep(2)
            host.check_output(f"docker restart -t 75 {container}")
            wait_for(
                f"{container} to answer on port {port}",
                lambda: host.run(f"curl -fsS -o /dev/null http://127.0.0.1:{port}/health").rc == 0,
                60,
                0.3,
            )
        time.sleep(2)
    finally:
        stop.set()
        submitter.join(15)
    logs = host.check_output(f"docker logs --since {since} {container} 2>&1")
    drains = [json.loads(line) for line in logs.splitlines() if '"drain_finished"' in line]
    wait_for(
        f"{len(accepted)} accepted jobs to finish",
        lambda: all(s == ("done", 1) for s in job_runs(accepted).values()),
        120,
        2,
    )
    final = job_runs(accepted)
    lost = [j for j, (s, _) in final.items() if s != "done"]
    twice = [j for j, (_, runs) in final.items() if runs != 1]
    durations = [d["duration_s"] for d in drains]
    print(
        f"\n[sigterm x10] {len(accepted)} jobs accepted ({refused} submissions refused while a "
        f"restart was under way), {len(lost)} lost, {len(twice)} run twice; drain times (s): "
        f"{durations}"
    )
    assert len(drains) == 10, logs[-3000:]
    assert all(d < 60 for d in durations)
    assert len(accepted) > 50
    assert not lost and not twice


def test_full_disk_under_the_job_database(host: Any) -> None:
    """A backend of the active version on a 4 MiB tmpfs, filled until SQLite cannot
    write; the check runs inside that container so it takes seconds, not minutes."""
    state = read_state(host)
    version = state["colors"][state["active"]]["version"]
    image = host.check_output(
        f"docker inspect -f '{{{{.Config.Image}}}}' archibald-backend-{state['active']}"
    )
    name = "archibald-diskfull-test"
    host.run(f"docker rm -f {name}")
    # The tmpfs belongs to the image's user (this Docker ignores tmpfs mode=).
    uid = host.check_output(f"docker run --rm --entrypoint id {image} -u")
    host.check_output(
        f"docker run -d --name {name} --network host -e APP_HOST=127.0.0.1 -e APP_PORT=8191 "
        f"-e APP_COLOR=test -e APP_VERSION={version} --tmpfs /data:rw,uid={uid},size=4m "
        f"{image} backend"
    )
    script = r"""
import json, os, time, urllib.error, urllib.request
BASE = "http://127.0.0.1:8191"
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")
for _ in range(100):
    try:
        if call("GET", "/health")[0] == 200: break
    except OSError: pass
    time.sleep(0.1)
job = {"kind": "sleep", "params": {"seconds": 0.05, "cpu": 0}}
slow = {"kind": "sleep", "params": {"seconds": 1, "cpu": 0}}
accepted = [call("POST", "/api/jobs", slow)[1]["id"] for _ in range(20)]
pending_at_fill = sum(call("GET", f"/api/jobs/{j}")[1]["status"] != "done" for j in accepted)
with open("/data/filler", "wb") as f:
    try:
        while True:
            f.write(b"\0" * 65536); f.flush()
    except OSError: pass
refused = None
for i in range(5000):
    status, body = call("POST", "/api/jobs", job)
    if status == 202:
        accepted.append(body["id"]); continue
    refused = {"status": status, "body": body, "after": i}
    break
readable = sum(call("GET", f"/api/jobs/{j}")[0] == 200 for j in accepted)
os.remove("/data/filler")
t0 = time.monotonic()
while time.monotonic() - t0 < 60:
    states = [call("GET", f"/api/jobs/{j}")[1] for j in accepted]
    if all(s.get("status") == "done" for s in states): break
    time.sleep(0.5)
after = call("POST", "/api/jobs", job)[0]
print(json.dumps({"accepted": len(accepted), "refused": refused, "readable": readable,
    "pending_at_fill": pending_at_fill,
    "done": sum(s.get("status") == "done" for s in states),
    "twice": sum(s.get("runs") != 1 for s in states),
    "recovered_in_s": round(time.monotonic() - t0, 1), "after_space_returned": after}))
"""
    try:
        out = host.check_output(f"docker exec -i {name} python - <<'EOF'\n{script}\nEOF")
        logs = host.check_output(f"docker logs {name} 2>&1")
    finally:
        host.run(f"docker rm -f {name}")
    result = json.loads(out.splitlines()[-1])
    print(
        f"\n[disk full] {result['accepted']} jobs accepted ({result['pending_at_fill']} not yet "
        "done when the disk filled), then submission "
        f"{result['refused'] and result['refused']['after']} on the full disk answered "
        f"{result['refused'] and result['refused']['status']}: "
        f"{result['refused'] and result['refused']['body'].get('error')}; "
        f"{result['readable']} of {result['accepted']} readable while full; after space "
        f"returned: {result['done']} done, {result['twice']} run twice, new submission "
        f"{result['after_space_returned']}"
    )
    assert result["refused"] and result["refused"]["status"] == 507, out
    assert "job store is full" in result["refused"]["body"]["error"]
    assert result["pending_at_fill"] > 0, "every job was done before the disk filled"
    assert result["readable"] == result["accepted"]
    assert result["done"] == result["accepted"] and result["twice"] == 0
    assert result["after_space_returned"] == 202
    assert '"submit_rejected"' in logs


def test_unreachable_registry_fails_before_traffic_moves(host: Any) -> None:
    """The registry refuses connections during a release of a tag the host does not have."""
    before = serving()
    before_state = host.file(f"{STATE_DIR}/state.json").content_string
    tag = f"fault-{int(time.time())}"
    subprocess.run(
        f"docker tag 127.0.0.1:5000/archibald/app:v1 127.0.0.1:5000/archibald/app:{tag} && "
        f"docker push -q 127.0.0.1:5000/archibald/app:{tag}",
        shell=True,
        check=True,
        capture_output=True,
    )
    rule = "OUTPUT -p tcp --dport 5000 -j REJECT --reject-with tcp-reset"
    host.check_output(f"iptables -I {rule}")
    try:
        rc, out, elapsed = run_playbook("release.yml", "-e", f"app_version={tag}")
    finally:
        host.run(f"iptables -D {rule}")
        subprocess.run(["docker", "rmi", f"127.0.0.1:5000/archibald/app:{tag}"], check=False)
    print(f"\n[registry unreachable] release refused after {elapsed:.1f} s, rc={rc}")
    assert rc != 0, out[-2000:]
    assert f"Could not pull registry:5000/archibald/app:{tag}" in out, out[-3000:]
    assert "traffic was not touched" in out
    assert serving() == before
    assert host.file(f"{STATE_DIR}/state.json").content_string == before_state


def test_reboot_brings_everything_back(host: Any) -> None:
    """A release leaves the old colour inside its window; the host restarts; nginx,
    Prometheus, the node exporter and the active colour come back by themselves, and
    the old colour is still retired when its window ends."""
    state = read_state(host)
    version = "v3" if state["colors"][state["active"]]["version"] != "v3" else "v2"
    rc, out, _ = run_playbook(
        "release.yml", "-e", f"app_version={version}", "-e", "bluegreen_rollback_window_s=40"
    )
    assert rc == 0, out[-3000:]
    after = read_state(host)
    old = state["active"]
    retire_file = f"{STATE_DIR}/retire-{old}.json"
    assert host.file(retire_file).exists
    started = time.monotonic()
    subprocess.run(["docker", "restart", "-t", "30", HOST_CONTAINER], check=True)
    wait_for("nginx to answer after the reboot", lambda: edge_or_none() is not None, 180, 1)
    back_s = time.monotonic() - started
    color, served_version = serving()
    units = {
        unit: host.run(f"systemctl is-active {unit}").stdout.strip()
        for unit in (
            "nginx",
            "prometheus",
            "prometheus-node-exporter",
            "docker",
            "archibald-retire.timer",
        )
    }
    still_pending = host.file(retire_file).exists
    deadline = json.loads(host.file(retire_file).content_string)["deadline"] if still_pending else 0
    print(
        f"\n[reboot] nginx answered again {back_s:.0f} s after the restart began, from "
        f"{color} ({served_version}); units {units}; retirement of {old} still pending: "
        f"{still_pending}"
    )
    assert (color, served_version) == (after["active"], version)
    assert all(v == "active" for v in units.values()), units
    assert still_pending, "the pending retirement was lost in the reboot"
    assert deadline

    def old_stopped() -> bool:
        out = host.check_output(
            f"docker ps -q --filter label=org.archibald.color={old} "
            "--filter label=org.archibald.app=archibald"
        )
        return out.strip() == "" and not host.file(retire_file).exists

    wait_for(f"colour {old} to be retired after its window", old_stopped, 120, 2)
    print(f"[reboot] colour {old} retired {time.monotonic() - started:.0f} s after the reboot")
    targets = wait_for("Prometheus targets up", lambda: prometheus_up(host), 90, 3)
    print(f"[reboot] Prometheus scrapes again: {targets}")


def edge_or_none() -> tuple[int, dict[str, Any]] | None:
    try:
        status, body = edge("/health", timeout=2)
    except OSError:
        return None
    return (status, body) if status == 200 else None


def prometheus_up(host: Any) -> str | None:
    result = host.run("curl -fsS 'http://127.0.0.1:9090/api/v1/query?query=up'")
    if result.rc != 0:
        return None
    series = json.loads(result.stdout)["data"]["result"]
    up = {s["metric"]["job"] for s in series if s["value"][1] == "1"}
    return ", ".join(sorted(up)) if {"prometheus", "node"} <= up else None
