#!/usr/bin/python
# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: canary_gate
short_description: judge one canary step against the stable colour from the edge's own counters
description:
  - Reads the edge metrics (mtail's C(edge_http_requests_total) and
    C(edge_http_request_duration_seconds) per colour and service, from nginx's log) straight from
    the exporter every O(interval) seconds, and judges what each colour answered since the step
    began (the counters' growth from the first read), not a rate window. Prometheus scrapes the
    same exporter every 15 s and evaluates its rules every 15 s; read directly, a bad canary is
    seen within seconds of its O(min_requests)th request instead of 30 s or more later.
  - The canary breaches when, with at least O(min_requests) requests of its own, its 5xx share is
    above O(max_error_ratio), or above the stable colour's share plus O(max_error_ratio_increase);
    or when the p99 of one of its services (with O(p99_min_requests) requests of it) is above
    O(max_p99_s), or above O(max_p99_factor) times the stable colour's p99 of that service (never
    below O(p99_floor_s)); or when its own health URLs fail O(health_failures) times in a row (a
    colour that hangs answers nothing, so it would give no counts to judge).
  - Stops at the first breach. Otherwise judges for O(duration) seconds; the verdict is then
    C(pass), or C(insufficient_data) when the canary never had O(min_requests) requests.
  - Runs on the target host with the Python standard library only.
options:
  metrics_url:
    description: The edge metrics exporter's URL (Prometheus text format).
    type: str
    required: true
  canary:
    description: The canary's colour.
    type: str
    required: true
  stable:
    description: The stable colour it is compared with.
    type: str
    required: true
  duration:
    description: Seconds to judge for when nothing breaches.
    type: float
    required: true
  interval:
    description: Seconds between two reads.
    type: float
    default: 1
  min_requests:
    description: Requests a colour (or one of its services, for the p99) needs before it is judged.
    type: int
    default: 50
  max_error_ratio:
    description: The highest 5xx share the canary may have.
    type: float
    default: 0.1
  max_error_ratio_increase:
    description: How much higher than the stable colour's the canary's 5xx share may be.
    type: float
    default: 0.05
  max_p99_s:
    description: The highest p99 request time a canary service may have.
    type: float
    default: 2.0
  max_p99_factor:
    description: How many times the stable service's p99 the canary's may be.
    type: float
    default: 3.0
  p99_floor_s:
    description: The relative p99 limit is never below this many seconds.
    type: float
    default: 0.5
  p99_min_requests:
    description: Requests a service needs before its p99 is judged (the p99 of fewer than 100 is
      their slowest, often a cold first request).
    type: int
    default: 100
  health_urls:
    description: The canary's own health URLs (its ports on loopback), asked every round.
    type: list
    elements: str
    default: []
  health_failures:
    description: Consecutive failed rounds of O(health_urls) that breach.
    type: int
    default: 3
  request_timeout:
    description: Seconds one request (a metrics read, a health check) may take.
    type: float
    default: 2
attributes:
  check_mode:
    support: full
    description: Reads only.
  diff_mode:
    support: none
author:
  - archibald-ops
"""

EXAMPLES = r"""
- name: Judge the canary on green against blue for 60 s
  canary_gate:
    metrics_url: http://127.0.0.1:3903/metrics
    canary: green
    stable: blue
    duration: 60
    health_urls: [http://127.0.0.1:8201/health, http://127.0.0.1:8202/health]
  register: step
"""

RETURN = r"""
verdict:
  description: C(pass), C(fail) or C(insufficient_data).
  returned: always
  type: str
reasons:
  description: Why the canary breached, as sentences (empty unless C(fail)).
  returned: always
  type: list
  elements: str
colors:
  description: Per colour since the step began, C(requests), C(errors), C(error_ratio) and per
    service C(p99_s) and C(requests).
  returned: always
  type: dict
elapsed:
  description: Seconds judged.
  returned: always
  type: float
rounds:
  description: Reads made.
  returned: always
  type: int
"""

import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible.module_utils.basic import AnsibleModule

REQUESTS = "edge_http_requests_total"
DURATION = "edge_http_request_duration_seconds_bucket"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Counts = dict[tuple[str, ...], float]


def parse(text: str) -> tuple[Counts, Counts]:
    """(requests by (colour, service, status), buckets by (colour, service, le)) from the text."""
    requests: Counts = {}
    buckets: Counts = {}
    for line in text.splitlines():
        found = SAMPLE.match(line)
        if not found or found.group(1) not in (REQUESTS, DURATION):
            continue
        labels = dict(LABEL.findall(found.group(2) or ""))
        try:
            value = float(found.group(3))
        except ValueError:
            continue
        key = (labels.get("color", ""), labels.get("service", ""))
        if found.group(1) == REQUESTS:
            requests[(*key, labels.get("status", ""))] = value
        else:
            buckets[(*key, labels.get("le", ""))] = value
    return requests, buckets


def delta(now: Counts, start: Counts) -> Counts:
    """Growth since the first read; a counter that went down (a restart of mtail) counts from 0."""
    out = {}
    for key, value in now.items():
        before = start.get(key, 0.0)
        out[key] = value - before if value >= before else value
    return out


def p99(buckets: Mapping[str, float]) -> float | None:
    """The upper bound of the bucket that holds the 99th percentile (cumulative buckets by le)."""
    bounds = sorted(((float(le), n) for le, n in buckets.items()), key=lambda b: b[0])
    total = bounds[-1][1] if bounds else 0
    if total <= 0:
        return None
    for bound, count in bounds:
        if count >= 0.99 * total:
            return bound
    return bounds[-1][0]


def summarise(requests: Counts, buckets: Counts, color: str) -> dict[str, Any]:
    """What one colour answered: requests, 5xx, their share, and p99 and requests per service."""
    mine = {k: v for k, v in requests.items() if k[0] == color}
    total = sum(mine.values())
    errors = sum(v for k, v in mine.items() if k[2].startswith("5"))
    services: dict[str, dict[str, Any]] = {}
    for service in sorted({k[1] for k in mine}):
        per_le = {k[2]: v for k, v in buckets.items() if k[0] == color and k[1] == service}
        services[service] = {
            "requests": int(sum(v for k, v in mine.items() if k[1] == service)),
            "p99_s": p99(per_le),
        }
    return {
        "requests": int(total),
        "errors": int(errors),
        "error_ratio": round(errors / total, 4) if total else None,
        "services": services,
    }


def judge(
    canary: Mapping[str, Any], stable: Mapping[str, Any], params: Mapping[str, Any]
) -> list[str]:
    """Why the canary breaches, compared with the stable colour (empty: no breach yet)."""
    reasons: list[str] = []
    least = int(params["min_requests"])
    if canary["requests"] >= least:
        ratio = canary["error_ratio"] or 0.0
        base = stable["error_ratio"] if stable["requests"] >= least else None
        if ratio > float(params["max_error_ratio"]):
            reasons.append(
                f"5xx share {ratio:.1%} of {canary['requests']} requests is above "
                f"{float(params['max_error_ratio']):.1%}"
            )
        elif base is not None and ratio > base + float(params["max_error_ratio_increase"]):
            reasons.append(
                f"5xx share {ratio:.1%} of {canary['requests']} requests is more than "
                f"{float(params['max_error_ratio_increase']):.1%} above the stable colour's "
                f"{base:.1%}"
            )
    least_p99 = max(least, int(params.get("p99_min_requests") or 0))
    for service, facts in canary["services"].items():
        mine = facts["p99_s"]
        if facts["requests"] < least_p99 or mine is None:
            continue
        theirs = stable["services"].get(service, {})
        limit = float(params["max_p99_s"])
        if theirs.get("requests", 0) >= least_p99 and theirs.get("p99_s") is not None:
            limit = min(
                limit, max(float(params["max_p99_factor"]) * theirs["p99_s"], params["p99_floor_s"])
            )
        if mine > limit:
            reasons.append(f"{service} p99 {mine:g} s is above {limit:g} s")
    return reasons


def healthy(urls: Sequence[str], timeout: float) -> bool:
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                if answer.status != 200:
                    return False
        except (urllib.error.URLError, OSError):
            return False
    return True


def run(
    params: Mapping[str, Any],
    read: Callable[[], str],
    check_health: Callable[[], bool],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Judge the step: read, compare, stop at the first breach or after ``duration``."""
    start = clock()
    first = parse(read())
    rounds, failures, reasons = 0, 0, []
    colors: dict[str, Any] = {}
    while True:
        sleep(float(params["interval"]))
        rounds += 1
        requests, buckets = parse(read())
        requests, buckets = delta(requests, first[0]), delta(buckets, first[1])
        colors = {c: summarise(requests, buckets, c) for c in (params["canary"], params["stable"])}
        reasons = judge(colors[params["canary"]], colors[params["stable"]], params)
        failures = 0 if check_health() else failures + 1
        if failures >= int(params["health_failures"]):
            reasons.append(
                f"its own health check failed {failures} times in a row "
                f"({', '.join(params['health_urls'])})"
            )
        if reasons or clock() - start >= float(params["duration"]):
            break
    if reasons:
        verdict = "fail"
    elif colors[params["canary"]]["requests"] < int(params["min_requests"]):
        verdict = "insufficient_data"
    else:
        verdict = "pass"
    return {
        "verdict": verdict,
        "reasons": reasons,
        "colors": colors,
        "elapsed": round(clock() - start, 2),
        "rounds": rounds,
    }


ARGUMENT_SPEC: dict[str, Any] = {
    "metrics_url": {"type": "str", "required": True},
    "canary": {"type": "str", "required": True},
    "stable": {"type": "str", "required": True},
    "duration": {"type": "float", "required": True},
    "interval": {"type": "float", "default": 1},
    "min_requests": {"type": "int", "default": 50},
    "max_error_ratio": {"type": "float", "default": 0.1},
    "max_error_ratio_increase": {"type": "float", "default": 0.05},
    "max_p99_s": {"type": "float", "default": 2.0},
    "max_p99_factor": {"type": "float", "default": 3.0},
    "p99_floor_s": {"type": "float", "default": 0.5},
    "p99_min_requests": {"type": "int", "default": 100},
    "health_urls": {"type": "list", "elements": "str", "default": []},
    "health_failures": {"type": "int", "default": 3},
    "request_timeout": {"type": "float", "default": 2},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    timeout = float(params["request_timeout"])

    def read() -> str:
        try:
            with urllib.request.urlopen(params["metrics_url"], timeout=timeout) as answer:
                return answer.read().decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            module.fail_json(
                msg=f"cannot read the edge metrics at {params['metrics_url']}: {exc}. The canary "
                f"on {params['canary']} was NOT judged; check `systemctl status mtail` on the host"
            )
            raise  # unreachable: fail_json exits

    result = run(params, read, lambda: healthy(params["health_urls"], timeout))
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
