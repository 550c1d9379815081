#!/usr/bin/python
# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: prometheus_gate
short_description: judge a release by PromQL gates evaluated over a time window
description:
  - Evaluates each gate's PromQL query with the Prometheus HTTP API (instant queries,
    C(/api/v1/query)) every O(interval) seconds for O(window) seconds, and stops early when a gate
    is breached.
  - A gate states what a healthy value looks like, for example C(error ratio < 0.1). A sample
    breaches the gate when C(value op threshold) is false. When a query returns several series,
    the worst one is judged (the largest for C(<) and C(<=), the smallest for C(>) and C(>=)).
  - A query that returns nothing (an empty vector, or only NaN) gives no data for that sample. With
    O(gates[].min_samples_query), a sample is only judged when that query's value is at least
    O(gates[].min_samples) (for example enough requests for an error ratio to mean something).
  - The verdict is C(fail) when any gate breached, C(insufficient_data) when some gate was never
    judged, else C(pass).
  - When Prometheus does not answer (after O(retries) tries) or rejects a query, the module fails
    and says that the release was NOT judged, with Prometheus' own error text.
  - Runs on the target host; asks Prometheus with Ansible's own HTTP client
    (C(ansible.module_utils.urls)).
options:
  url:
    description: Base URL of Prometheus.
    type: str
    default: http://127.0.0.1:9090
  gates:
    description: The gates to evaluate.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name of the gate, unique, used in the results and messages.
        type: str
        required: true
      query:
        description: PromQL expression giving one number (an instant vector or a scalar).
        type: str
        required: true
      op:
        description: Comparison a healthy value satisfies against O(gates[].threshold).
        type: str
        choices: ['<', '<=', '>', '>=']
        required: true
      threshold:
        description: The threshold.
        type: float
        required: true
      min_samples_query:
        description: PromQL expression whose value must reach O(gates[].min_samples) for a sample
          of this gate to be judged.
        type: str
      min_samples:
        description: Minimum value of O(gates[].min_samples_query).
        type: float
        default: 1
  window:
    description: Seconds over which the gates are evaluated (0 evaluates once).
    type: float
    default: 60
  interval:
    description: Seconds between two evaluations.
    type: float
    default: 15
  retries:
    description: Tries per query when Prometheus does not answer or answers with a server error.
    type: int
    default: 3
  request_timeout:
    description: Seconds one request to Prometheus may take.
    type: float
    default: 10
  validate_certs:
    description: Verify the TLS certificate of an HTTPS O(url).
    type: bool
    default: true
  fail_on_breach:
    description:
      - Fail with the evidence (each query, its values over the window, the threshold) when a gate
        breaches. With V(false) the module returns the verdict, so that a playbook can roll back
        first and fail afterwards.
    type: bool
    default: true
  fail_on_insufficient_data:
    description: Fail when the verdict is C(insufficient_data) instead of passing.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description:
      - Evaluates every query once (read-only) to prove that Prometheus answers and the queries
        are valid, but does not wait for the window and never fails on the verdict.
  diff_mode:
    support: none
notes:
  - The module never changes anything; RV(changed) is always false.
author:
  - archibald-ops
"""

EXAMPLES = r"""
- name: Judge the new colour for two minutes
  prometheus_gate:
    window: 120
    interval: 15
    fail_on_breach: false
    gates:
      - name: error_rate
        query: >-
          sum(rate(http_requests_total{color="green",status=~"5.."}[1m]))
          / sum(rate(http_requests_total{color="green"}[1m]))
        op: "<"
        threshold: 0.1
        min_samples_query: sum(increase(http_requests_total{color="green"}[1m]))
        min_samples: 20
      - name: target_up
        query: min(up{job="app",color="green"})
        op: ">="
        threshold: 1
  register: release_gate

- name: Roll back when the gate failed
  ansible.builtin.include_tasks: rollback.yml
  when: release_gate.verdict == 'fail'
"""

RETURN = r"""
passed:
  description:
    - True when the verdict is C(pass), or C(insufficient_data) and
      O(fail_on_insufficient_data=false).
  returned: always
  type: bool
verdict:
  description: C(pass), C(fail) or C(insufficient_data).
  returned: always
  type: str
breached:
  description: The breaching samples, one per breached gate.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "error_rate", "query": "...", "op": "<", "threshold": 0.1,
            "value": 0.25, "at": 1735732800.0}]
insufficient:
  description: Names of the gates that were never judged.
  returned: always
  type: list
  elements: str
samples:
  description: For each gate, C([time, value]) pairs; the value is null when there was no data.
  returned: always
  type: dict
  sample: {"error_rate": [[1735732800.0, 0.01], [1735732815.0, null]]}
gates:
  description: Per gate, its query, comparison, status (pass, fail, insufficient_data) and values.
  returned: always
  type: list
  elements: dict
rounds:
  description: Number of evaluations made.
  returned: always
  type: int
elapsed:
  description: Seconds spent.
  returned: always
  type: float
"""

import json
import math
import operator
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.httpfetch import fetch

OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
NOT_JUDGED = "the release was NOT judged"


class PrometheusDown(Exception):
    """Prometheus did not answer."""


class QueryRejected(Exception):
    """Prometheus answered with an error for a query."""


@dataclass
class Gate:
    name: str
    query: str
    op: str
    threshold: float
    min_samples_query: str | None = None
    min_samples: float = 1
    samples: list[list[Any]] = field(default_factory=list)
    breach: dict[str, Any] | None = None

    @property
    def judged(self) -> int:
        return sum(1 for _, value in self.samples if value is not None)

    @property
    def status(self) -> str:
        if self.breach is not None:
            return "fail"
        return "pass" if self.judged else "insufficient_data"


def make_gates(specs: Sequence[Mapping[str, Any]]) -> list[Gate]:
    gates = []
    for spec in specs:
        if spec.get("op") not in OPS:
            raise ValueError(f"gate {spec.get('name')!r}: op must be one of {', '.join(OPS)}")
        gates.append(
            Gate(
                name=str(spec["name"]),
                query=str(spec["query"]),
                op=str(spec["op"]),
                threshold=float(spec["threshold"]),
                min_samples_query=spec.get("min_samples_query") or None,
                min_samples=float(spec.get("min_samples") or 1),
            )
        )
    names = [g.name for g in gates]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"gate names must be unique; repeated: {', '.join(duplicates)}")
    if not gates:
        raise ValueError("gates must list at least one gate")
    return gates


def parse_result(promql: str, payload: Mapping[str, Any]) -> list[float]:
    """Values of an instant query answer; NaN dropped, so [] means no data."""
    if payload.get("status") != "success":
        raise QueryRejected(f"query {promql!r} failed: {payload.get('error', payload)}")
    data = payload.get("data") or {}
    kind = data.get("resultType")
    result = data.get("result")
    if kind == "vector":
        raw = [item["value"][1] for item in result or []]
    elif kind == "scalar" and isinstance(result, list):
        raw = [result[1]]
    else:
        raise QueryRejected(
            f"query {promql!r} gives a {kind}, expected an instant vector or a scalar "
            f"(a gate needs one number per evaluation)"
        )
    values = [float(v) for v in raw]
    return [v for v in values if not math.isnan(v)]


def query(
    base_url: str,
    promql: str,
    *,
    request_timeout: float = 10,
    retries: int = 3,
    retry_delay: float = 1,
    validate_certs: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> list[float]:
    """Run an instant query; raise PrometheusDown or QueryRejected with a readable reason."""
    url = base_url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    problem = ""
    for attempt in range(1, max(1, retries) + 1):
        status, body, error = fetch(url, request_timeout, validate_certs=validate_certs, limit=None)
        if status == 200:
            try:
                return parse_result(promql, json.loads(body))
            except ValueError as exc:
                problem = f"not JSON: {exc}"
        elif status is None:
            problem = str(error).removeprefix("no answer: ")
        else:
            try:
                reason = json.loads(body).get("error") or body
            except (ValueError, AttributeError):
                reason = body
            if status < 500:  # 400 bad_data, 422 execution error: retrying will not help
                raise QueryRejected(
                    f"Prometheus rejected the query {promql!r} (HTTP {status}): {reason}"
                )
            problem = f"HTTP {status}: {str(reason)[:300]}"
        if attempt < retries:
            sleep(retry_delay)
    raise PrometheusDown(
        f"Prometheus at {base_url} did not answer: {problem} (tried {max(1, retries)} times); "
        f"{NOT_JUDGED}"
    )


def worst(values: list[float], op: str) -> float:
    return max(values) if op in ("<", "<=") else min(values)


def evaluate_round(gates: list[Gate], run_query: Callable[[str], list[float]], at: float) -> bool:
    """Take one sample of every gate; return True when some gate breached."""
    breached = False
    for gate in gates:
        if gate.min_samples_query:
            support = run_query(gate.min_samples_query)
            if not support or max(support) < gate.min_samples:
                gate.samples.append([at, None])
                continue
        values = run_query(gate.query)
        if not values:
            gate.samples.append([at, None])
            continue
        value = worst(values, gate.op)
        gate.samples.append([at, value])
        if gate.breach is None and not OPS[gate.op](value, gate.threshold):
            gate.breach = {
                "name": gate.name,
                "query": gate.query,
                "op": gate.op,
                "threshold": gate.threshold,
                "value": value,
                "at": at,
            }
            breached = True
    return breached


def run_gates(
    gates: list[Gate],
    run_query: Callable[[str], list[float]],
    *,
    window: float,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Sample every gate each interval until the window ends or a gate breaches."""
    start = clock()
    deadline = start + window
    rounds = 0
    while True:
        round_start = clock()
        rounds += 1
        if evaluate_round(gates, run_query, round(wall(), 3)):
            break
        next_round = round_start + interval
        if next_round > deadline:
            break
        pause = next_round - clock()
        if pause > 0:
            sleep(pause)
    return summarise(gates, rounds, round(clock() - start, 2))


def summarise(gates: list[Gate], rounds: int, elapsed: float) -> dict[str, Any]:
    breached = [g.breach for g in gates if g.breach is not None]
    insufficient = [g.name for g in gates if g.status == "insufficient_data"]
    verdict = "fail" if breached else "insufficient_data" if insufficient else "pass"
    return {
        "verdict": verdict,
        "breached": breached,
        "insufficient": insufficient,
        "samples": {g.name: g.samples for g in gates},
        "gates": [
            {
                "name": g.name,
                "query": g.query,
                "op": g.op,
                "threshold": g.threshold,
                "min_samples_query": g.min_samples_query,
                "min_samples": g.min_samples,
                "status": g.status,
                "values": [v for _, v in g.samples],
            }
            for g in gates
        ],
        "rounds": rounds,
        "elapsed": elapsed,
    }


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%SZ")


def _values(values: list[Any]) -> str:
    return ", ".join("no data" if v is None else f"{v:g}" for v in values)


def breach_message(result: Mapping[str, Any]) -> str:
    parts = []
    by_name = {g["name"]: g for g in result["gates"]}
    for breach in result["breached"]:
        gate = by_name[breach["name"]]
        parts.append(
            f"gate {breach['name']} breached: {breach['query']} was {breach['value']:g} at "
            f"{_when(breach['at'])}, must be {breach['op']} {breach['threshold']:g}; values over "
            f"{result['elapsed']} s: {_values(gate['values'])}"
        )
    return "prometheus gate failed, the release is judged bad: " + "; ".join(parts)


def insufficient_message(result: Mapping[str, Any]) -> str:
    parts = []
    for gate in result["gates"]:
        if gate["status"] != "insufficient_data":
            continue
        why = f"{gate['query']} returned no data"
        if gate["min_samples_query"]:
            why += f" or {gate['min_samples_query']} stayed below {gate['min_samples']:g}"
        parts.append(f"gate {gate['name']}: {why} in {result['rounds']} evaluations")
    return (
        f"prometheus gate could not judge the release over {result['elapsed']} s: "
        + "; ".join(parts)
        + " (set fail_on_insufficient_data: false to let such a release pass)"
    )


ARGUMENT_SPEC: dict[str, Any] = {
    "url": {"type": "str", "default": "http://127.0.0.1:9090"},
    "gates": {
        "type": "list",
        "elements": "dict",
        "required": True,
        "options": {
            "name": {"type": "str", "required": True},
            "query": {"type": "str", "required": True},
            "op": {"type": "str", "required": True, "choices": list(OPS)},
            "threshold": {"type": "float", "required": True},
            "min_samples_query": {"type": "str"},
            "min_samples": {"type": "float", "default": 1},
        },
    },
    "window": {"type": "float", "default": 60},
    "interval": {"type": "float", "default": 15},
    "retries": {"type": "int", "default": 3},
    "request_timeout": {"type": "float", "default": 10},
    "validate_certs": {"type": "bool", "default": True},
    "fail_on_breach": {"type": "bool", "default": True},
    "fail_on_insufficient_data": {"type": "bool", "default": False},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    p = module.params
    if p["window"] < 0 or p["interval"] <= 0 or p["request_timeout"] <= 0 or p["retries"] < 1:
        module.fail_json(
            msg="window must be >= 0, interval and request_timeout > 0 and retries >= 1 "
            f"(got window={p['window']}, interval={p['interval']}, "
            f"request_timeout={p['request_timeout']}, retries={p['retries']})"
        )
    try:
        gates = make_gates(p["gates"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))

    def run_query(promql: str) -> list[float]:
        return query(
            p["url"],
            promql,
            request_timeout=p["request_timeout"],
            retries=p["retries"],
            retry_delay=min(1.0, p["interval"]),
            validate_certs=p["validate_certs"],
        )

    try:
        result = run_gates(
            gates,
            run_query,
            window=0 if module.check_mode else p["window"],
            interval=p["interval"],
        )
    except PrometheusDown as exc:
        module.fail_json(msg=str(exc), url=p["url"])
    except QueryRejected as exc:
        module.fail_json(msg=f"{exc}; {NOT_JUDGED}", url=p["url"])

    verdict = result["verdict"]
    passed = verdict == "pass" or (
        verdict == "insufficient_data" and not p["fail_on_insufficient_data"]
    )
    output = {"changed": False, "passed": passed, "url": p["url"], **result}
    if module.check_mode:
        module.exit_json(msg="check mode: every query evaluated once, nothing judged", **output)
    if verdict == "fail" and p["fail_on_breach"]:
        module.fail_json(msg=breach_message(result), **output)
    if verdict == "insufficient_data" and p["fail_on_insufficient_data"]:
        module.fail_json(msg=insufficient_message(result), **output)
    module.exit_json(**output)


if __name__ == "__main__":
    main()
