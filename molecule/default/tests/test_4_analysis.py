"""Metric-gated promotion: after the switch the release watches the new colour in
Prometheus; a bad release under load rolls back by itself and is marked bad.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from conftest import (
    Prober,
    edge,
    hey,
    parse_hey,
    post_job,
    read_state,
    run_playbook,
    start_playbook,
    stop_hey,
    wait_for,
)

ANALYSIS = ["-e", "bluegreen_analysis_window_s=120", "-e", "bluegreen_analysis_interval_s=5"]
# A healthy release is judged from 75 s on (the rate window must lie in the new
# containers' life, and a recorded sample may be one evaluation old); 90 s
# leaves three rounds of judgement and saves CI 30 s.
HEALTHY_ANALYSIS = ["-e", "bluegreen_analysis_window_s=90", "-e", "bluegreen_analysis_interval_s=5"]


def other_version(host: Any) -> str:
    state = read_state(host)
    active_version = state["colors"][state["active"]]["version"]
    return "v3" if active_version != "v3" else "v2"


def test_healthy_release_passes_its_analysis_under_a_flood_of_malformed_requests(
    host: Any,
) -> None:
    # Clients can send anything; their mistakes are 4xx and must never count as
    # the new colour's faults, or a flood of them would roll a healthy release back.
    flood = hey(
        200, 10, 2, "/api/jobs", "-m", "POST", "-T", "application/json", "-d", '{"kind": [[['
    )
    try:
        with Prober("/api/jobs?limit=1") as prober:
            version = other_version(host)
            rc, out, elapsed = run_playbook(
                "release.yml", "-e", f"app_version={version}", *HEALTHY_ANALYSIS
            )
    finally:
        flood_out = stop_hey(flood)
    assert rc == 0, out[-3000:]
    verdict = re.search(rf"Analysis of {version} on \w+:\s+(\w+)", out)
    assert verdict, out[-3000:]
    assert verdict.group(1) == "pass", f"analysis verdict {verdict.group(1)}:\n{out[-3000:]}"
    codes = parse_hey(flood_out)["codes"]
    print(
        f"\n[analysis] healthy release of {version} passed in {elapsed:.0f} s; "
        f"{prober.summary()}; malformed flood answered {codes}"
    )
    assert not prober.failed()
    assert codes and all(400 <= c < 500 for c in codes), codes


def test_bad_release_rolls_back_by_itself(host: Any) -> None:
    before = read_state(host)
    good = before["active"]
    load = hey(300, 25, 4)
    prober = Prober("/api/jobs?limit=1")
    prober.start()
    accepted: list[str] = []

    def submit(stop: threading.Event) -> None:
        while not stop.is_set():
            status, job_id = post_job(0.2)
            if status == 202 and job_id:
                accepted.append(job_id)
            time.sleep(0.3)

    stop = threading.Event()
    submitter = threading.Thread(target=submit, args=(stop,), daemon=True)
    submitter.start()
    try:
        time.sleep(5)
        rc, out, elapsed = run_playbook("release.yml", "-e", "app_version=bad-errors", *ANALYSIS)
        finished = time.monotonic()
        time.sleep(5)
    finally:
        stop.set()
        prober.stop.set()
        hey_out = stop_hey(load)
        prober.join(10)
        submitter.join(10)
    assert rc != 0, out[-3000:]
    assert "was rolled back automatically" in out, out[-4000:]
    after = read_state(host)
    assert after["active"] == good
    assert "bad-errors" in after["bad_versions"]
    assert after["history"][-1]["event"] in ("auto_rollback", "mark_bad")
    samples = prober.samples
    errors = [s for s in samples if s[1] >= 500 or s[1] == 0]
    assert errors, "the bad release never answered an error: the test did not test anything"
    first_bad = errors[0][0]
    # Traffic is back when the old colour answers and every later answer is fine.
    back = next(
        (
            s[0]
            for i, s in enumerate(samples)
            if s[0] > first_bad and s[2] == good and all(t[1] == 200 for t in samples[i:])
        ),
        None,
    )
    assert back is not None, f"traffic never settled back on {good}: {samples[-20:]}"
    after_back = [s for s in samples if s[0] > finished and s[1] != 200]
    codes = parse_hey(hey_out)["codes"]
    print(
        f"\n[auto rollback] first bad answer to traffic back on {good}: "
        f"{back - first_bad:.1f} s; prober: {len(errors)} failed of "
        f"{sum(1 for s in samples if first_bad <= s[0] <= back)} in between, "
        f"{len(after_back)} failed after the rollback finished; "
        f"hey status codes {codes}; release run {elapsed:.0f} s"
    )
    assert not after_back, f"failed answers after traffic came back: {after_back[:5]}"

    def all_done() -> bool:
        return all(edge(f"/api/jobs/{j}")[1].get("status") == "done" for j in accepted)

    wait_for(f"{len(accepted)} accepted jobs to finish", all_done, timeout=120, interval=2)
    print(f"[auto rollback] {len(accepted)} jobs accepted during the bad release, all done")
    # A plain rerun does not promote the bad version again.
    rc, out, _ = run_playbook("release.yml", "-e", "app_version=bad-errors")
    assert rc != 0 and "is listed in bad_versions" in out, out[-3000:]


def test_prometheus_down_during_analysis_fails_safely(host: Any) -> None:
    before = read_state(host)
    version = other_version(host)
    release = start_playbook("release.yml", "-e", f"app_version={version}", *ANALYSIS)
    try:
        wait_for("the switch", lambda: read_state(host)["active"] != before["active"], 180, 0.5)
        host.check_output("systemctl stop prometheus")
        out, _ = release.communicate(timeout=300)
    finally:
        host.run("systemctl start prometheus")
    target = read_state(host)["active"]
    print(f"\n[prometheus down] release failed with rc={release.returncode}; traffic on {target}")
    assert release.returncode != 0, out[-3000:]
    assert "the release was not judged" in out and f"Traffic stays on {target}" in out, out[-3000:]
    status, body = edge("/health")
    assert status == 200 and body["color"] == target and body["version"] == version
