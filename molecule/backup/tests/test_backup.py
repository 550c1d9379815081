"""The backup drill: back up a live app host over SFTP, lose it, restore onto a fresh host.

backup-app runs the app (release v1) and backs up to backup-sftp (sshd, an
SFTP account, the host key pinned); backup-fresh was provisioned and released
the same way but has an empty job database. The tests run in file order:

1. the nightly timer is enabled with its schedule;
2. jobs are submitted through nginx and run; a backup through
   playbooks/backup.yml (the systemd service) writes the textfile metrics;
3. more jobs, a second backup: its delta is small, retention forgets the first;
4. a restore with a wrong password, or of a snapshot that is not there, fails
   with a clear message and changes nothing;
5. backup-app is stopped (the host is gone); playbooks/restore.yml restores the
   latest snapshot onto backup-fresh: every job is there with the same ID and
   result, and the release record is the one backup-app had. Data lost: 0.

Grafana's database: the Grafana package comes from Grafana's repository, which
these hosts cannot reach (its install is tested where it answers, in
molecule/grafana_online). The drill puts a SQLite database where and as Grafana
keeps it (/var/lib/grafana/grafana.db, owned by the grafana system user, a
dashboard table) on both hosts, the fresh one's empty as after a new install:
the backup copies it consistently as its owner, and the restore puts back the
app host's rows with the owner kept. Stopping grafana-server around the
restore is not exercised here (there is no such service on these hosts).

Figures (wall times, sizes, job counts) are printed with a [drill] prefix.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import testinfra

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from harness import playbook as playbooks  # noqa: E402

APP = testinfra.get_host("docker://backup-app")
FRESH = testinfra.get_host("docker://backup-fresh")
SFTP = testinfra.get_host("docker://backup-sftp")
STATE = "/var/lib/archibald/archibald/state.json"
TEXTFILE = "/var/lib/prometheus/node-exporter/archibald_backup.prom"
CHECK_TEXTFILE = "/var/lib/prometheus/node-exporter/archibald_backup_check.prom"
BACKUP = "/usr/local/sbin/archibald-backup"
# What earlier tests found, for the later ones (the file runs in order).
DRILL: dict[str, Any] = {}
# Testinfra would run each test once per inventory host; the hosts are named above.
testinfra_hosts = ["backup-app"]


def playbook(name: str, *extra: str) -> tuple[int, str, float]:
    rc, output, elapsed = playbooks.run(name, *extra, timeout=600)
    return rc, " ".join(output.split()), elapsed


def api(host: Any, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One request to the app through the host's nginx (self-signed certificate),
    as a well-behaved client: the edge's rate limit (10 r/s per address, the
    sandbox's settings) answers 429 with retry_after_s when the drill submits and
    polls faster than that, and the request is then made again after that wait
    (at most 30 times). A POST made again is safe: 429 comes from nginx, so
    the app never saw the first one."""
    data = f"-H 'Content-Type: application/json' -d '{json.dumps(body)}'" if body else ""
    command = (
        f"curl -ksS --fail-with-body --max-time 10 -X {method} -H 'Host: localhost' {data} "
        f"https://127.0.0.1{path}"
    )
    for _ in range(30):
        result = host.run(command)
        if result.rc == 0:
            return json.loads(result.stdout)
        if "error: 429" not in result.stderr:
            break
        time.sleep(float(json.loads(result.stdout).get("retry_after_s", 1)))
    raise AssertionError(
        f"{method} {path}: curl exited {result.rc}: {result.stdout} {result.stderr}"
    )


def submit(count: int) -> list[int]:
    ids = []
    for i in range(count):
        body = (
            {"kind": "fail", "params": {"seconds": 0, "message": f"drill failure {i}"}}
            if i % 5 == 4
            else {"kind": "sleep", "params": {"seconds": 0.02}}
        )
        ids.append(int(api(APP, "POST", "/api/jobs", body)["id"]))
    return ids


def wait_finished(host: Any, ids: list[int], timeout: float = 120) -> dict[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = {i: api(host, "GET", f"/api/jobs/{i}") for i in ids}
        pending = [i for i, job in jobs.items() if job["status"] not in ("done", "failed")]
        if not pending:
            return jobs
        if time.monotonic() > deadline:
            pytest.fail(f"jobs not finished within {timeout} s: {pending[:10]}")
        time.sleep(1)


def metrics(host: Any, textfile: str = TEXTFILE) -> dict[str, float]:
    values = {}
    for line in host.file(textfile).content_string.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            values[name.removeprefix("archibald_backup_")] = float(value)
    return values


def snapshots(host: Any) -> list[dict[str, Any]]:
    return json.loads(host.check_output(f"{BACKUP} restic snapshots --json"))


GRAFANA_DB = "/var/lib/grafana/grafana.db"
DASHBOARDS = ("Application Health", "System Overview", "Releases")


def grafana_stand_in(host: Any, titles: tuple[str, ...]) -> None:
    """Grafana's database as its package leaves it: the grafana system user's
    file in /var/lib/grafana, here with a dashboard table holding `titles`."""
    rows = ", ".join(f"('{title}')" for title in titles)
    insert = f"INSERT INTO dashboard(title) VALUES {rows};" if titles else ""
    host.check_output(
        "id grafana >/dev/null 2>&1 || useradd --system --no-create-home grafana; "
        "install -d -o grafana -g grafana -m 0750 /var/lib/grafana; "
        f"rm -f {GRAFANA_DB}; runuser -u grafana -- sqlite3 {GRAFANA_DB} "
        f'"CREATE TABLE dashboard(id INTEGER PRIMARY KEY, title TEXT); {insert}"'
    )


def grafana_dashboards(host: Any) -> list[str]:
    out = host.check_output(f"sqlite3 {GRAFANA_DB} 'SELECT title FROM dashboard ORDER BY id'")
    return out.splitlines()


def job_count(host: Any) -> int:
    """Every job the API lists, a page of 500 at a time (keyset: ?before=)."""
    count, before = 0, ""
    while True:
        page = api(host, "GET", f"/api/jobs?limit=500{before}")
        count += len(page["jobs"])
        if page["next_before"] is None:
            return count
        before = f"&before={page['next_before']}"


def test_timer_is_enabled_with_the_schedule() -> None:
    assert APP.service("archibald-backup.timer").is_enabled
    assert APP.service("archibald-backup.timer").is_running
    timer = APP.check_output(
        "systemctl show --property TimersCalendar,RandomizedDelayUSec archibald-backup.timer"
    )
    assert "OnCalendar=*-*-* 03:15:00" in timer, timer
    assert "RandomizedDelayUSec=15min" in timer, timer
    # The secrets are root's only.
    for path in ("/etc/archibald-backup/restic-password", "/etc/archibald-backup/id_sftp"):
        secret = APP.file(path)
        assert (secret.user, secret.mode) == ("root", 0o600), path
    # Before any backup: the alert's clock is there, no success yet.
    enabled = APP.file("/var/lib/prometheus/node-exporter/archibald_backup_enabled.prom")
    assert "archibald_backup_enabled_timestamp_seconds " in enabled.content_string


def test_first_backup_through_the_service_writes_the_metrics() -> None:
    grafana_stand_in(APP, DASHBOARDS)
    grafana_stand_in(FRESH, ())
    ids = submit(40)
    DRILL["jobs"] = wait_finished(APP, ids)
    started = time.time()
    rc, out, wall = playbook("backup.yml", "-l", "backup-app")
    assert rc == 0, out[-3000:]
    assert "snapshot_saved" in out and "repository_created" in out, out[-3000:]
    # The service ran it: systemd's journal has the run, the textfile its figures.
    figures = metrics(APP)
    assert figures["last_run_success"] == 1
    assert started - 1 <= figures["last_success_timestamp_seconds"] <= time.time() + 1
    assert figures["duration_seconds"] > 0 and figures["size_bytes"] > 0
    assert figures["repository_size_bytes"] > 0
    DRILL["first"] = figures
    DRILL["backup_wall_s"] = wall
    snaps = snapshots(APP)
    assert len(snaps) == 1 and snaps[0]["hostname"] == "archibald-drill"
    listing = APP.check_output(f"{BACKUP} restic ls latest")
    assert "/var/lib/archibald-backup/staging/jobs/jobs.sqlite3" in listing
    assert "/var/lib/archibald/archibald/state.json" in listing
    assert "/var/lib/archibald-backup/staging/grafana/grafana.db" in listing
    assert "/etc/nginx/nginx.conf" in listing
    assert "release.lock" not in listing and "secrets-" not in listing
    # The repository lives on the SFTP server, owned by its account.
    assert SFTP.file("/srv/restic/archibald/config").user == "restic"
    print(
        f"\n[drill] first backup: {len(ids)} jobs, playbook {wall:.1f} s, service "
        f"{figures['duration_seconds']:.1f} s, snapshot {figures['size_bytes'] / 1e6:.2f} MB, "
        f"added {figures['added_bytes'] / 1e6:.2f} MB, repository "
        f"{figures['repository_size_bytes'] / 1e6:.2f} MB"
    )


def test_second_backup_is_incremental_and_retention_forgets() -> None:
    ids = submit(10)
    DRILL["jobs"].update(wait_finished(APP, ids))
    first_id = snapshots(APP)[0]["id"]
    # The timer's own unit, started by hand: what the nightly run does.
    started = time.monotonic()
    APP.check_output("systemctl start archibald-backup.service")
    wall = time.monotonic() - started
    second, first = metrics(APP), DRILL["first"]
    assert second["last_success_timestamp_seconds"] > first["last_success_timestamp_seconds"]
    assert second["added_bytes"] < first["added_bytes"] / 2, (second, first)
    # keep-daily 1 (host_vars): the first snapshot of today is forgotten and pruned.
    snaps = snapshots(APP)
    assert [s["id"] for s in snaps] != [first_id] and len(snaps) == 1, snaps
    log = APP.check_output("journalctl -u archibald-backup.service --output cat")
    assert "retention_applied" in log
    DRILL["state"] = json.loads(APP.file(STATE).content_string)
    DRILL["repository_bytes"] = second["repository_size_bytes"]
    print(
        f"\n[drill] second backup: +{len(ids)} jobs, {wall:.1f} s, added "
        f"{second['added_bytes'] / 1e3:.1f} kB (first: {first['added_bytes'] / 1e3:.1f} kB), "
        f"snapshots kept {len(snaps)} (keep-daily 1), repository "
        f"{second['repository_size_bytes'] / 1e6:.2f} MB"
    )


def test_the_weekly_check_passes_and_finds_a_damaged_copy() -> None:
    """The check's timer and service: restic check reads 5 % of the data back and
    passes. A copy of the repository with one pack file damaged (on the storage
    host; the real one untouched), checked with every pack read: it fails, says
    so, and its metric is 0 for BackupCheckFailed."""
    timer = APP.check_output(
        "systemctl show --property TimersCalendar archibald-backup-check.timer"
    )
    assert "OnCalendar=Sun *-*-* 05:15:00" in timer, timer
    assert APP.service("archibald-backup-check.timer").is_enabled
    started = time.monotonic()
    APP.check_output("systemctl start archibald-backup-check.service")
    wall = time.monotonic() - started
    good = metrics(APP, CHECK_TEXTFILE)
    assert good["check_last_run_success"] == 1, good
    log = APP.check_output("journalctl -u archibald-backup-check.service --output cat")
    assert "check_finished" in log and '"read": "5%"' in log, log[-2000:]

    SFTP.check_output(
        "rm -rf /srv/restic/damaged && cp -a /srv/restic/archibald /srv/restic/damaged && "
        "pack=$(find /srv/restic/damaged/data -type f | head -n 1) && "
        "printf 'damaged' | dd of=\"$pack\" bs=1 seek=64 conv=notrunc status=none"
    )
    settings = (
        "import json; c = json.load(open('/etc/archibald-backup/backup.json')); "
        "c.update(repository='sftp:restic@backup-sftp:/srv/restic/damaged', "
        "check_textfile='/tmp/damaged-check.prom', check_read_data_subset='100%'); "
        "json.dump(c, open('/tmp/damaged-check.json', 'w'))"
    )
    try:
        APP.check_output(f'python3 -c "{settings}"')
        damaged = APP.run(f"BACKUP_CONFIG=/tmp/damaged-check.json {BACKUP} check")
        failed = metrics(APP, "/tmp/damaged-check.prom")
    finally:
        SFTP.run("rm -rf /srv/restic/damaged")
        APP.run("rm -f /tmp/damaged-check.json /tmp/damaged-check.prom")
    print(
        f"\n[check] the weekly check passed in {wall:.1f} s (5 % read); the damaged copy: "
        f"rc {damaged.rc}, {damaged.stderr.strip().splitlines()[0]!r}"
    )
    assert damaged.rc == 1, damaged.stdout[-2000:]
    assert "the repository check failed" in damaged.stderr, damaged.stderr
    assert "OPERATIONS.md 10.6" in damaged.stderr
    assert failed["check_last_run_success"] == 0
    assert metrics(APP, CHECK_TEXTFILE)["check_last_run_success"] == 1, "the real one untouched"


def test_restore_with_a_wrong_password_fails_clearly_and_changes_nothing() -> None:
    before = job_count(FRESH)
    rc, out, _ = playbook(
        "restore.yml", "-l", "backup-fresh", "-e", "backup_password=not-the-password"
    )
    assert rc != 0
    assert "The repository password does not open sftp:restic@backup-sftp:" in out, out[-2000:]
    assert "not-the-password" not in out
    # A named snapshot that is not there: refused by name, before anything changes.
    rc, out, _ = playbook("restore.yml", "-l", "backup-fresh", "-e", "backup_restore_snapshot=0bad")
    assert rc != 0
    assert "No snapshot" in out and "0bad" in out, out[-2000:]
    assert "of host archibald-drill with tags" in out, out[-2000:]
    assert job_count(FRESH) == before


def test_restore_onto_a_fresh_host_loses_nothing() -> None:
    jobs = DRILL["jobs"]
    before = job_count(FRESH)
    # The app host is gone.
    subprocess.run(
        ["docker", "stop", "--time", "10", "backup-app"], check=True, capture_output=True
    )
    rc, out, wall = playbook("restore.yml", "-l", "backup-fresh")
    assert rc == 0, out[-4000:]
    said = out.find("Restored snapshot")
    print(f"[drill] the restore said: {out[said : said + 700]}")
    # The same containers, started again: not recreated without their settings.
    active = DRILL["state"]["active"]
    env = FRESH.check_output("docker inspect -f '{{.Config.Env}}' archibald-backend-" + active)
    assert f"APP_COLOR={active}" in env, env
    assert (
        "Restored snapshot" in out
        and "Writers stopped and started again: archibald-backend-" in out
    )
    assert "no drift" in out, out[-3000:]
    restored = {i: api(FRESH, "GET", f"/api/jobs/{i}") for i in jobs}
    lost = [i for i in jobs if restored[i] != jobs[i]]
    after = job_count(FRESH)
    state = json.loads(FRESH.file(STATE).content_string)
    assert state == DRILL["state"]
    # Grafana's database too, still its user's.
    assert grafana_dashboards(FRESH) == list(DASHBOARDS)
    restored_grafana = FRESH.file(GRAFANA_DB)
    assert (restored_grafana.user, restored_grafana.group) == ("grafana", "grafana")
    # The restored database is the app's own again: a new job is accepted and runs.
    new_id = int(api(FRESH, "POST", "/api/jobs", {"kind": "sleep", "params": {"seconds": 0}})["id"])
    assert new_id > max(jobs)
    assert wait_finished(FRESH, [new_id])[new_id]["status"] == "done"
    print(
        f"\n[drill] restore onto backup-fresh: {wall:.1f} s (playbook); jobs on the app host "
        f"{len(jobs)}, on the fresh host before {before}, after {after}; data lost: {len(lost)}; "
        f"Grafana's dashboards restored: {len(DASHBOARDS)} of {len(DASHBOARDS)}; "
        f"backup wall time {DRILL['backup_wall_s']:.1f} s (playbook), repository "
        f"{DRILL['repository_bytes'] / 1e6:.2f} MB"
    )
    assert not lost, f"jobs differ after the restore: {lost[:5]}"
    assert after == len(jobs)
