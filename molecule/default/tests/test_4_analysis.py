"""Gated promotion: after the switch the release judges the new colour on evidence
from the edge's own counters (every second) while Prometheus watches its metrics; a
bad release under load rolls back by itself within seconds and is marked bad.
"""

from __future__ import annotations

import os
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
    probe,
    read_state,
    run_playbook,
    start_playbook,
    stop_hey,
    wait_for,
)

ANALYSIS = ["-e", "bluegreen_analysis_window_s=120", "-e", "bluegreen_analysis_interval_s=5"]
# Issue 24's target for a full switch to a bad image: traffic back within 20 s
# of its first bad answer, held when this part runs alone. Beside the other
# whole-stack lanes (ARCHIBALD_STACK_BESIDE: three hosts on two cores) every
# Ansible task takes longer: 22.2 s was seen there on one machine, and 36.3 s
# on a machine that ran the whole suite 1.9 times slower (load average 12; the
# edge's judgement still failed the release 1.3 s into its window: the rest was
# the playbook's tasks queueing for the cores). Beside the lanes it holds 45 s
# and says so; the 20 s target is the one that holds alone.
BESIDE = os.environ.get("ARCHIBALD_STACK_BESIDE") == "1"
BACK_WITHIN_S = 45 if BESIDE else 20
# A healthy release is judged from 75 s on (the rate window must lie in the new
# containers' life, and a recorded sample may be one evaluation old); 90 s
# leaves three rounds of judgement and saves CI 30 s.
HEALTHY_ANALYSIS = ["-e", "bluegreen_analysis_window_s=90", "-e", "bluegreen_analysis_interval_s=5"]
# Prometheus is stopped right after the switch: its first query after that fails
# the metric analysis, but the edge's judgement still runs its whole window before
# the release ends (it may still catch a bad release). 30 s of it prove the same
# as 120 (and save the lane 90 s).
PROMETHEUS_DOWN = ["-e", "bluegreen_analysis_window_s=30", "-e", "bluegreen_analysis_interval_s=5"]


class PacedProber(Prober):
    """The Prober at a pace: a pause of `pause_s` after each answer (one new TLS connection
    a request: with 0.04 s, about 20 requests/s)."""

    def __init__(self, path: str, pause_s: float) -> None:
        super().__init__(path)
        self.pause_s = pause_s

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            status, color = probe(self.path)
            self.samples.append((started, status, color, time.monotonic() - started))
            time.sleep(self.pause_s)


def edge_judgement(out: str) -> str:
    """The analysis' report of the judgement at the edge, from the release's output."""
    found = re.search(
        r"at the edge (\w+ \([^)]*\) after [\d.]+ s): (.*?); (?:gates|Prometheus)", out
    )
    return f"{found.group(1)}: {found.group(2)}" if found else "(no report at the edge)"


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
    assert "at the edge pass (sprt)" in out, out[-3000:]
    codes = parse_hey(flood_out)["codes"]
    print(
        f"\n[analysis] healthy release of {version} passed in {elapsed:.0f} s; "
        f"{prober.summary()}; malformed flood answered {codes}; at the edge "
        f"{edge_judgement(out)}"
    )
    assert not prober.failed()
    assert codes and all(400 <= c < 500 for c in codes), codes


def test_bad_release_rolls_back_by_itself(host: Any) -> None:
    """A full switch to the image failing 30 % of API requests at about 20 requests/s: the
    judgement at the edge calls it bad within seconds of its first bad answer, and traffic
    is back on the old colour within 20 s of it (issue 24; 73 s over Prometheus' 1m rate
    windows before); every job accepted meanwhile is done, and the version is marked bad."""
    before = read_state(host)
    good = before["active"]
    prober = PacedProber("/api/jobs?limit=1", 0.04)
    prober.start()
    accepted: list[str] = []
    posted: list[tuple[float, int]] = []

    def submit(stop: threading.Event) -> None:
        while not stop.is_set():
            status, job_id = post_job(0.2)
            posted.append((time.monotonic(), status))
            if status == 202 and job_id:
                accepted.append(job_id)
            time.sleep(0.5)

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
        prober.join(10)
        submitter.join(10)
    assert rc != 0, out[-3000:]
    assert "was rolled back automatically" in out, out[-4000:]
    assert "Why: at the edge: its 5xx share is " in out, out[-4000:]
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
    between = [s for s in samples if first_bad <= s[0] <= back]
    rate = len(samples) / max(1.0, samples[-1][0] - samples[0][0])
    posts_failed = sum(1 for at_, status in posted if first_bad <= at_ <= back and status != 202)
    print(
        f"\n[auto rollback] full switch to bad-errors at {rate:.0f} GETs/s (+2 POSTs/s): first "
        f"bad answer to traffic back on {good}: {back - first_bad:.1f} s; prober: "
        f"{len(errors)} failed of {len(between)} in between, {len(after_back)} failed after "
        f"the rollback finished; {posts_failed} job submissions failed; release run "
        f"{elapsed:.0f} s; at the edge {edge_judgement(out)}"
    )
    assert not after_back, f"failed answers after traffic came back: {after_back[:5]}"
    where = "beside other lanes" if BESIDE else "alone"
    print(f"[auto rollback] bound {BACK_WITHIN_S} s ({where})")
    assert back - first_bad <= BACK_WITHIN_S, f"traffic back {back - first_bad:.1f} s after"

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
    release = start_playbook("release.yml", "-e", f"app_version={version}", *PROMETHEUS_DOWN)
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
