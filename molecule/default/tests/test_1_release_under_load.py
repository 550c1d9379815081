"""Release v2, then roll back, under continuous load through nginx over TLS.

Asserts 0 non-2xx answers and 0 connection errors across at least 20,000
requests at 200 req/s or more, and that every job submitted meanwhile runs
exactly once. Prints p50/p99 in steady state and around the switches, and the
release, rollback and flip timings.
"""

from __future__ import annotations

import statistics
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
    stop_hey,
    wait_for,
)

HEY_CONCURRENCY = 8
HEY_RATE_PER_WORKER = 32  # 8 x 32 = 256 req/s offered
HEY_MAX_S = 420


class Submitter(threading.Thread):
    """Submits a short job every 0.25 s through nginx."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.results: list[tuple[int, str | None]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.results.append(post_job(0.3))
            time.sleep(0.25)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def phase(samples: list[tuple[float, int, str, float]], start: float, end: float) -> str:
    lat = [s[3] for s in samples if start <= s[0] < end]
    return f"n={len(lat):5d} p50={pct(lat, 0.5):6.1f} ms p99={pct(lat, 0.99):6.1f} ms"


def test_release_and_rollback_under_load(host: Any) -> None:
    before = read_state(host)
    assert before["active"] == "blue" and before["colors"]["blue"]["version"] == "v1"

    load = hey(HEY_MAX_S, HEY_RATE_PER_WORKER, HEY_CONCURRENCY)
    prober, submitter = Prober(), Submitter()
    prober.start()
    submitter.start()
    marks: dict[str, float] = {"start": time.monotonic()}
    try:
        time.sleep(15)
        marks["release"] = time.monotonic()
        rc, out, release_s = run_playbook("release.yml", "-e", "app_version=v2")
        assert rc == 0, out[-3000:]
        marks["released"] = time.monotonic()
        time.sleep(10)
        marks["rollback"] = time.monotonic()
        rc, out, rollback_s = run_playbook("rollback.yml")
        assert rc == 0, out[-3000:]
        marks["rolled_back"] = time.monotonic()
        time.sleep(10)
        # Keep the load on until it has sent well over 20,000 requests: faster
        # releases must not make the test weaker.
        needed_s = 22000 / (HEY_CONCURRENCY * HEY_RATE_PER_WORKER)
        time.sleep(max(0.0, needed_s - (time.monotonic() - marks["start"])))
    finally:
        marks["end"] = time.monotonic()
        hey_out = stop_hey(load)
        prober.stop.set()
        submitter.stop.set()
        prober.join(10)
        submitter.join(20)

    result = parse_hey(hey_out)
    total = sum(result["codes"].values()) + result["errors"]
    non2xx = sum(n for c, n in result["codes"].items() if not 200 <= c < 300)
    samples = prober.samples
    # The flip as a client sees it: the last answer from blue before the first
    # from green (the prober asks every ~20 ms), and any blue answer after it.
    green = [s[0] for s in samples if s[2] == "green"]
    blue_before = [s[0] for s in samples if s[2] == "blue" and green and s[0] < green[0]]
    flip_ms = (green[0] - blue_before[-1]) * 1000 if green and blue_before else float("nan")
    # During nginx's graceful reload old workers may still accept a few
    # connections for a moment: blue (healthy, still running) answers those.
    # The overlap is the time from the first green answer to the last blue one.
    rb = marks["rollback"]
    mixed = [s for s in samples if green and green[0] < s[0] < rb and s[2] != "green"]
    overlap_ms = (mixed[-1][0] - green[0]) * 1000 if mixed else 0.0
    # Rollback as the person on call sees it: from the command to the first
    # answer of the old colour through nginx.
    back = [s[0] for s in samples if s[0] > rb and s[2] == "blue"]
    rollback_to_traffic_s = back[0] - rb if back else float("nan")
    print("\n=== release under load ===")
    print(
        f"hey: {total} requests, {result['rps']:.0f} req/s, status codes {result['codes']}, "
        f"connection errors {result['errors']}"
    )
    print(f"steady state      {phase(samples, marks['start'], marks['release'])}")
    print(f"release v1 -> v2  {phase(samples, marks['release'], marks['released'])}")
    print(f"rollback v2 -> v1 {phase(samples, marks['rollback'], marks['rolled_back'])}")
    print(f"after rollback    {phase(samples, marks['rolled_back'], marks['end'])}")
    print(
        f"timings: release {release_s:.1f} s (target <= 60), rollback {rollback_s:.1f} s "
        f"(target <= 15), rollback command to traffic on blue {rollback_to_traffic_s:.1f} s "
        f"(target <= 10), flip {flip_ms:.0f} ms between the last blue and first green answer "
        f"(target < 1000), {len(mixed)} blue answers after the first green one, "
        f"over {overlap_ms:.0f} ms"
    )
    bad_probes = prober.failed()
    assert not bad_probes, f"health probes through nginx failed: {bad_probes[:10]}"
    assert result["errors"] == 0, f"connection errors under load:\n{result['error_lines']}"
    assert non2xx == 0, f"non-2xx answers under load: {result['codes']}"
    assert total >= 20000, f"only {total} requests: the load did not span the releases"
    assert result["rps"] >= 200, f"load was {result['rps']:.0f} req/s, expected >= 200"
    assert green, "no answer ever came from green: the release did not switch traffic"
    assert flip_ms < 1000, f"the flip took {flip_ms:.0f} ms"
    assert overlap_ms < 1000, f"old colour still answered {overlap_ms:.0f} ms after the flip"
    assert read_state(host)["active"] == "blue"

    # Every job submitted during the releases finishes exactly once.
    rejected = [r for r in submitter.results if r[0] != 202]
    assert not rejected, f"job submissions refused during the releases: {rejected[:10]}"
    ids = [job_id for _status, job_id in submitter.results if job_id]

    def all_done() -> bool:
        return all(edge(f"/api/jobs/{job_id}")[1].get("status") == "done" for job_id in ids)

    wait_for(f"{len(ids)} jobs to finish", all_done, timeout=180, interval=2)
    runs = [edge(f"/api/jobs/{job_id}")[1].get("runs") for job_id in ids]
    print(
        f"jobs: {len(ids)} submitted during the releases, all done, runs per job "
        f"{statistics.mode(runs) if runs else '-'} (max {max(runs) if runs else '-'})"
    )
    assert all(r == 1 for r in runs), f"jobs run more than once: {runs}"
