#!/usr/bin/python
# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: canary_gate
short_description: judge a colour on evidence from the edge's own counters, sequentially
description:
  - Reads the edge metrics (mtail's C(edge_http_requests_total) and
    C(edge_http_request_duration_seconds) per colour and service, from nginx's log) straight from
    the exporter every O(interval) seconds, and judges what each colour answered since
    O(baseline) (the counters before traffic moved) or else since its own first read. Prometheus
    scrapes the same exporter every 15 s; read directly, a bad colour is seen within a second.
  - Judges the 5xx share of colour O(canary) with two sequential tests (module_utils/sequential.py)
    at every read, each given half of O(alpha), so that a healthy colour is aborted with a
    probability of at most O(alpha) however often it is looked at. Wald's SPRT against the
    allowed share O(max_error_ratio) (p0) with the clearly bad share p1 = O(p1_factor) x p0 (capped
    halfway to 1) and miss rate O(beta); and, while the O(stable) colour has traffic, an
    anytime-valid comparison with it (Lindon, Sanden, Shirikian, KDD 2022). Of both colours'
    errors, the canary's share is binomial with theta0 = its share of the requests when it is no
    worse; a Beta(O(prior)) mixture likelihood ratio over theta >= theta0 is an e-value, bad at
    1/(its alpha) when the canary's share is also more than O(max_error_ratio_increase) above the
    stable one's.
  - Also breaches when the p99 of one of its services (with O(p99_min_requests) requests of it)
    is above O(max_p99_s), or above O(max_p99_factor) times the stable colour's p99 of that
    service (never below O(p99_floor_s)), unless O(judge_p99=false); or when its own health URLs
    fail O(health_failures) times in a row (a colour that hangs answers nothing).
  - Stops at the first breach. Otherwise judges for O(duration) seconds, and passes when the SPRT
    reached its good boundary (at 10 % allowed, twelve clean requests). Without that decision
    (low traffic, or a share between p0 and p1 that neither boundary reached) it waits for one up
    to O(max_wait) seconds in all; then the verdict is C(insufficient_data), and the caller
    decides (hold, or pass with a warning).
  - Runs on the target host; reads the URLs with Ansible's own HTTP client
    (C(ansible.module_utils.urls)).
options:
  metrics_url:
    description: The edge metrics exporter's URL (Prometheus text format).
    type: str
    required: true
  canary:
    description: The colour judged (a canary, or the new colour after a full switch).
    type: str
    required: true
  stable:
    description: The colour it is compared with (the old colour).
    type: str
    required: true
  baseline:
    description:
      - The exporter's text read before traffic moved (for example with M(ansible.builtin.uri)),
        so that every request since then counts. Empty or omitted, the module's own first read is
        the baseline.
    type: str
  duration:
    description: Seconds to judge for when nothing breaches.
    type: float
    required: true
  max_wait:
    description:
      - Seconds in all to wait for the SPRT's decision when O(duration) ends without one (low
        traffic). Never shorter than O(duration); 0 waits O(duration) only.
    type: float
    default: 0
  interval:
    description: Seconds between two reads.
    type: float
    default: 1
  min_requests:
    description: Requests a service needs before its p99 is judged (the higher of this and
      O(p99_min_requests)). The 5xx share needs no minimum; the sequential tests weigh the
      evidence whatever its size.
    type: int
    default: 50
  max_error_ratio:
    description: The allowed 5xx share p0 of the canary (between 0 and 1).
    type: float
    default: 0.1
  max_error_ratio_increase:
    description: How much higher than the stable colour's the canary's 5xx share must be before
      the comparison may abort.
    type: float
    default: 0.05
  alpha:
    description: The false-abort rate of the whole judgement (each test gets half).
    type: float
    default: 0.01
  beta:
    description: The SPRT's miss rate at the bad share p1.
    type: float
    default: 0.05
  p1_factor:
    description: The SPRT's clearly bad share p1 as a multiple of O(max_error_ratio) (above 1).
    type: float
    default: 3.0
  prior:
    description: The Beta prior's two parameters (a, b) of the comparison with the stable colour.
    type: list
    elements: float
    default: [1.0, 1.0]
  judge_p99:
    description: Judge the p99 of the canary's services too.
    type: bool
    default: true
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
  validate_certs:
    description: Verify the TLS certificates of HTTPS URLs.
    type: bool
    default: true
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
- name: Read the edge's counters before the canary gets its share
  ansible.builtin.uri:
    url: http://127.0.0.1:3903/metrics
    return_content: true
  register: before

- name: Judge the canary on green against blue for 60 s, up to 180 s at low traffic
  canary_gate:
    metrics_url: http://127.0.0.1:3903/metrics
    baseline: "{{ before.content }}"
    canary: green
    stable: blue
    duration: 60
    max_wait: 180
    health_urls: [http://127.0.0.1:8201/health, http://127.0.0.1:8202/health]
  register: step
"""

RETURN = r"""
verdict:
  description: C(pass), C(fail) or C(insufficient_data).
  returned: always
  type: str
decided_by:
  description: What decided the verdict, C(sprt), C(versus_stable), C(p99), C(health) (a fail may
    name several), or C(no decision).
  returned: always
  type: str
reasons:
  description: Why the canary breached, as sentences with the statistics (empty unless C(fail)).
  returned: always
  type: list
  elements: str
colors:
  description:
    - Per colour since the baseline, C(requests), C(errors), C(error_ratio), per service
      C(p99_s) and C(requests), and C(sprt) (C(llr), C(lower), C(upper), C(decision),
      C(decided_at_s), the seconds from the start when the decision was first reached; the
      stable colour's is shown, not judged).
    - The canary's C(versus_stable) has C(theta0), C(e_value), C(threshold), C(decision),
      C(decided_at_s).
  returned: always
  type: dict
assumptions:
  description: C(alpha), C(alpha_per_test), C(beta), C(p0), C(p1), C(prior), C(tolerance),
    C(min_requests), C(duration_s), C(bound_s).
  returned: always
  type: dict
summary:
  description: The judgement in one line, per colour, for the play's output.
  returned: always
  type: str
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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.httpfetch import fetch
from ansible.module_utils.sequential import (
    BAD,
    GOOD,
    TESTS,
    alternative,
    check_rates,
    sprt,
    versus_stable,
)

REQUESTS = "edge_http_requests_total"
DURATION = "edge_http_request_duration_seconds_bucket"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Counts = dict[tuple[str, ...], float]
Reading = tuple[Counts, Counts]


def parse(text: str) -> Reading:
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


# --- the error judgement --------------------------------------------------------


def assumptions(params: Mapping[str, Any]) -> dict[str, Any]:
    """The model the tests assume, from the module's options; ValueError names a bad one."""
    p0 = float(params["max_error_ratio"])
    alpha, beta = float(params["alpha"]), float(params["beta"])
    check_rates(alpha, beta)
    prior = [float(x) for x in params.get("prior") or (1.0, 1.0)]
    if len(prior) != 2 or min(prior) <= 0:
        raise ValueError(f"prior must be two positive numbers (a, b), got {params.get('prior')}")
    duration = float(params["duration"])
    return {
        "alpha": alpha,
        "alpha_per_test": alpha / TESTS,
        "beta": beta,
        "p0": p0,
        "p1": round(alternative(p0, float(params["p1_factor"])), 6),
        "prior": prior,
        "tolerance": float(params["max_error_ratio_increase"]),
        "min_requests": int(params["min_requests"]),
        "duration_s": duration,
        "bound_s": max(duration, float(params.get("max_wait") or 0)),
    }


def error_tests(
    colors: dict[str, dict[str, Any]], canary: str, stable: str, model: Mapping[str, Any]
) -> None:
    """Add this look's tests to ``colors``: every colour's SPRT, the canary's comparison."""
    for facts in colors.values():
        facts["sprt"] = sprt(
            facts["requests"],
            facts["errors"],
            model["p0"],
            model["p1"],
            model["alpha_per_test"],
            model["beta"],
        )
    mine, theirs = colors[canary], colors[stable]
    colors[canary]["versus_stable"] = versus_stable(
        mine["requests"],
        mine["errors"],
        theirs["requests"],
        theirs["errors"],
        model["alpha_per_test"],
        (model["prior"][0], model["prior"][1]),
        model["tolerance"],
    )


class Decisions:
    """When each test first reached a decision (seconds from the start); ``bad`` wins."""

    def __init__(self) -> None:
        self.reached: dict[tuple[str, str], tuple[str, float]] = {}

    def note(self, colors: dict[str, dict[str, Any]], at: float) -> None:
        for color, facts in colors.items():
            for test in ("sprt", "versus_stable"):
                decision = facts.get(test, {}).get("decision")
                before = self.reached.get((color, test))
                if decision == BAD and (before is None or before[0] != BAD):
                    self.reached[(color, test)] = (BAD, at)
                elif decision == GOOD and before is None:
                    self.reached[(color, test)] = (GOOD, at)

    def of(self, color: str, test: str) -> tuple[str | None, float | None]:
        decision, at = self.reached.get((color, test), (None, None))
        return decision, at

    def stamp(self, colors: dict[str, dict[str, Any]]) -> None:
        """Write each test's first decision and its time into ``colors``."""
        for color, facts in colors.items():
            for test in ("sprt", "versus_stable"):
                if test not in facts:
                    continue
                decision, at = self.of(color, test)
                if decision is not None:
                    facts[test]["decision"] = decision
                facts[test]["decided_at_s"] = at


def _share(facts: Mapping[str, Any]) -> str:
    ratio = facts["errors"] / facts["requests"] if facts["requests"] else 0.0
    return f"{facts['errors']} of {facts['requests']} requests failed ({ratio:.1%})"


def error_reasons(
    colors: Mapping[str, Any],
    canary: str,
    stable: str,
    model: Mapping[str, Any],
    decisions: Decisions,
) -> tuple[list[str], list[str]]:
    """(reasons, what decided them) for a canary one of whose tests says ``bad``."""
    mine = colors[canary]
    reasons, by = [], []
    test = mine["sprt"]
    if test["decision"] == BAD:
        at = decisions.of(canary, "sprt")[1]
        reasons.append(
            f"its 5xx share is above the allowed {model['p0']:.1%}: {_share(mine)}; SPRT "
            f"log-likelihood ratio {test['llr']:.2f} >= {test['upper']:.2f} (p1 {model['p1']:.1%}, "
            f"alpha {model['alpha_per_test']:g}, beta {model['beta']:g}) after {at:g} s"
        )
        by.append("sprt")
    test = mine["versus_stable"]
    if test["decision"] == BAD:
        at = decisions.of(canary, "versus_stable")[1]
        reasons.append(
            f"its 5xx share is worse than {stable}'s: {_share(mine)}, {stable} "
            f"{_share(colors[stable])}; e-value {test['e_value']:.4g} >= {test['threshold']:g} "
            f"(theta0 {test['theta0']:.3f}, prior Beta({model['prior'][0]:g}, "
            f"{model['prior'][1]:g}) on theta >= theta0) after {at:g} s"
        )
        by.append("versus_stable")
    return reasons, by


def latency_reasons(
    canary: Mapping[str, Any], stable: Mapping[str, Any], params: Mapping[str, Any]
) -> list[str]:
    """Why the canary's p99 breaches, compared with the stable colour (empty: no breach)."""
    reasons: list[str] = []
    least_p99 = max(int(params["min_requests"]), int(params.get("p99_min_requests") or 0))
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


def healthy(urls: Sequence[str], timeout: float, validate_certs: bool = True) -> bool:
    for url in urls:
        status, _body, _error = fetch(url, timeout, validate_certs=validate_certs)
        if status != 200:
            return False
    return True


def summary_line(result: Mapping[str, Any], canary: str, stable: str) -> str:
    """The judgement in one line: per colour counts, statistics, decisions; the assumptions."""
    parts = []
    for color, role in ((canary, "judged"), (stable, "stable")):
        facts = result["colors"][color]
        test = facts["sprt"]
        when = f" at {test['decided_at_s']:g} s" if test["decided_at_s"] is not None else ""
        text = (
            f"{color} ({role}): {_share(facts)}; SPRT LLR {test['llr']:.2f} "
            f"(bad >= {test['upper']:.2f}, good <= {test['lower']:.2f}): {test['decision']}{when}"
        )
        versus = facts.get("versus_stable")
        if versus is not None:
            if versus["e_value"] is None:
                text += f"; vs {stable}: {versus['decision']} (no traffic on one side)"
            else:
                when = (
                    f" at {versus['decided_at_s']:g} s"
                    if versus["decided_at_s"] is not None
                    else ""
                )
                text += (
                    f"; vs {stable}: e-value {versus['e_value']:.3g} (bad >= "
                    f"{versus['threshold']:g}, theta0 {versus['theta0']:.3f}): "
                    f"{versus['decision']}{when}"
                )
        parts.append(text)
    model = result["assumptions"]
    parts.append(
        f"alpha {model['alpha']:g} ({model['alpha_per_test']:g} a test), beta {model['beta']:g}, "
        f"p0 {model['p0']:.1%}, p1 {model['p1']:.1%}, prior Beta({model['prior'][0]:g}, "
        f"{model['prior'][1]:g}) on theta >= theta0, tolerance {model['tolerance']:.1%}; "
        f"{result['verdict']} ({result['decided_by']}) after {result['elapsed']:g} s of at most "
        f"{model['bound_s']:g} s"
    )
    return " | ".join(parts)


def run(
    params: Mapping[str, Any],
    read: Callable[[], Reading],
    check_health: Callable[[], bool],
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    baseline: Reading | None = None,
) -> dict[str, Any]:
    """Judge: read, test, stop at the first breach, at a decision after ``duration``, or at the
    bound. ``read`` returns parsed counters (``parse``)."""
    model = assumptions(params)
    canary, stable = params["canary"], params["stable"]
    start = clock()
    first = baseline if baseline is not None else read()
    rounds, failures = 0, 0
    decisions = Decisions()
    colors: dict[str, Any] = {}
    reasons: list[str] = []
    by: list[str] = []
    while True:
        sleep(float(params["interval"]))
        rounds += 1
        requests, buckets = read()
        requests, buckets = delta(requests, first[0]), delta(buckets, first[1])
        at = round(clock() - start, 2)
        colors = {c: summarise(requests, buckets, c) for c in (canary, stable)}
        error_tests(colors, canary, stable, model)
        decisions.note(colors, at)
        reasons, by = error_reasons(colors, canary, stable, model, decisions)
        if params.get("judge_p99", True):
            slow = latency_reasons(colors[canary], colors[stable], params)
            reasons += slow
            by += ["p99"] * bool(slow)
        failures = 0 if check_health() else failures + 1
        if failures >= int(params["health_failures"]):
            reasons.append(
                f"its own health check failed {failures} times in a row "
                f"({', '.join(params['health_urls'])})"
            )
            by.append("health")
        decided = decisions.of(canary, "sprt")[0] == GOOD
        if reasons or at >= model["bound_s"] or (at >= model["duration_s"] and decided):
            break
    decisions.stamp(colors)
    if reasons:
        verdict = "fail"
    elif decisions.of(canary, "sprt")[0] == GOOD:
        verdict, by = "pass", ["sprt"]
    else:
        verdict, by = "insufficient_data", ["no decision"]
    result: dict[str, Any] = {
        "verdict": verdict,
        "decided_by": ", ".join(dict.fromkeys(by)),
        "reasons": reasons,
        "colors": colors,
        "assumptions": model,
        "elapsed": round(clock() - start, 2),
        "rounds": rounds,
    }
    result["summary"] = summary_line(result, canary, stable)
    return result


ARGUMENT_SPEC: dict[str, Any] = {
    "metrics_url": {"type": "str", "required": True},
    "canary": {"type": "str", "required": True},
    "stable": {"type": "str", "required": True},
    "baseline": {"type": "str"},
    "duration": {"type": "float", "required": True},
    "max_wait": {"type": "float", "default": 0},
    "interval": {"type": "float", "default": 1},
    "min_requests": {"type": "int", "default": 50},
    "max_error_ratio": {"type": "float", "default": 0.1},
    "max_error_ratio_increase": {"type": "float", "default": 0.05},
    "alpha": {"type": "float", "default": 0.01},
    "beta": {"type": "float", "default": 0.05},
    "p1_factor": {"type": "float", "default": 3.0},
    "prior": {"type": "list", "elements": "float", "default": [1.0, 1.0]},
    "judge_p99": {"type": "bool", "default": True},
    "max_p99_s": {"type": "float", "default": 2.0},
    "max_p99_factor": {"type": "float", "default": 3.0},
    "p99_floor_s": {"type": "float", "default": 0.5},
    "p99_min_requests": {"type": "int", "default": 100},
    "health_urls": {"type": "list", "elements": "str", "default": []},
    "health_failures": {"type": "int", "default": 3},
    "request_timeout": {"type": "float", "default": 2},
    "validate_certs": {"type": "bool", "default": True},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    timeout = float(params["request_timeout"])
    if params["canary"] == params["stable"]:
        module.fail_json(msg=f"canary and stable must be two colours, got {params['canary']} twice")
    if params["interval"] <= 0 or params["duration"] < 0:
        module.fail_json(msg="interval must be above 0 and duration 0 or more seconds")
    try:
        assumptions(params)
    except ValueError as exc:
        module.fail_json(msg=f"canary_gate: {exc}")

    def read() -> Reading:
        status, body, error = fetch(
            params["metrics_url"], timeout, validate_certs=params["validate_certs"], limit=None
        )
        if status != 200:
            module.fail_json(
                msg=f"cannot read the edge metrics at {params['metrics_url']}: "
                f"{error or f'HTTP {status}'}. {params['canary']} was NOT judged; check "
                f"`systemctl status mtail` on the host"
            )
        return parse(body)

    baseline = parse(params["baseline"]) if params["baseline"] else None
    result = run(
        params,
        read,
        lambda: healthy(params["health_urls"], timeout, params["validate_certs"]),
        baseline=baseline,
    )
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
