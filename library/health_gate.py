#!/usr/bin/python
# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: health_gate
short_description: wait until HTTP endpoints answer healthy several times in a row
description:
  - Polls one or more URLs in rounds until O(consecutive) rounds in a row where every URL answers
    one of O(status_code) and, when O(expect_json) is set, a JSON body whose fields equal the
    expected values (for example the colour and version of a freshly started release).
  - Fails when that has not happened within O(timeout) seconds, with the last answer of every URL
    (status, body excerpt, error) and what was expected.
  - Runs on the target host; asks the URLs with Ansible's own HTTP client
    (C(ansible.module_utils.urls)), certificates checked unless O(validate_certs=false).
  - With O(containers), the containers behind the URLs must also keep running through the gate.
    They are read from the Docker engine's socket before the first round and after the last. The
    gate fails when one stopped, restarted (its restart count rose) or runs another image than
    O(image_id); a container that crash-loops can answer healthy between its restarts.
options:
  urls:
    description: URLs to check, each one in every round.
    type: list
    elements: str
    required: true
    aliases: [url]
  status_code:
    description: HTTP status codes that count as healthy.
    type: list
    elements: int
    default: [200]
  expect_json:
    description:
      - Fields the JSON body must contain with these values. Keys may be dotted to reach nested
        objects (V(checks.db)). Scalars are compared as text, so V(2) matches V("2").
    type: dict
  timeout:
    description: Seconds to wait in total for the gate to pass.
    type: float
    default: 60
  interval:
    description: Seconds between the start of two rounds.
    type: float
    default: 1
  request_timeout:
    description: Seconds one request may take before it counts as a failed answer.
    type: float
    default: 5
  consecutive:
    description: Number of healthy rounds in a row that pass the gate.
    type: int
    default: 3
  headers:
    description: Extra request headers (for example V(Host) when checking through nginx).
    type: dict
    default: {}
  validate_certs:
    description: Verify TLS certificates of HTTPS URLs.
    type: bool
    default: true
  containers:
    description: Names of the containers that must keep running, unrestarted, through the gate.
    type: list
    elements: str
    default: []
  image_id:
    description: The image ID every container of O(containers) must run (none checks no image).
    type: str
  docker_socket:
    description: The Docker engine's socket O(containers) are read from.
    type: path
    default: /var/run/docker.sock
attributes:
  check_mode:
    support: full
    description: In check mode nothing is polled (the service to check may not have been started
      by a check run); the result lists what would be checked.
  diff_mode:
    support: none
notes:
  - The module never changes anything; RV(changed) is always false.
author:
  - archibald-ops
"""

EXAMPLES = r"""
- name: Wait until the green colour reports the new version
  health_gate:
    urls:
      - http://127.0.0.1:8102/health
      - http://127.0.0.1:8202/health
    expect_json:
      color: green
      version: "{{ app_version }}"
    consecutive: 3
    timeout: 90
"""

RETURN = r"""
attempts:
  description: Number of polling rounds made.
  returned: always
  type: int
  sample: 4
elapsed:
  description: Seconds spent polling.
  returned: always
  type: float
  sample: 3.02
consecutive_ok:
  description: Healthy rounds in a row at the end.
  returned: always
  type: int
  sample: 3
last_answers:
  description: The last answer of every URL.
  returned: always
  type: list
  elements: dict
  contains:
    url:
      description: The URL.
      type: str
    status:
      description: HTTP status (null when there was no HTTP answer).
      type: int
    body:
      description: The first 300 characters of the body.
      type: str
    error:
      description: Why the answer is not healthy (null when healthy).
      type: str
    ok:
      description: Whether the answer is healthy.
      type: bool
containers:
  description: Each container of O(containers) as read after the last round (name, image_id,
    running, restart_count, started_at and its labels' colour, service, version, digest, config).
  returned: when O(containers) is given and the rounds passed
  type: list
  elements: dict
would_check:
  description: In check mode, the URLs and expectations that would have been checked.
  returned: check mode
  type: dict
"""

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.bluegreen import docker_inspected
from ansible.module_utils.httpfetch import fetch

BODY_EXCERPT = 300


@dataclass
class Answer:
    url: str
    status: int | None
    body: str
    error: str | None
    ok: bool


@dataclass
class GateResult:
    passed: bool
    attempts: int
    elapsed: float
    consecutive_ok: int
    last_answers: list[Answer]


def _lookup(document: Any, dotted: str) -> tuple[bool, Any]:
    current = document
    for part in dotted.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return False, None
        current = current[part]
    return True, current


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) or value is None else str(value)


def _same(actual: Any, expected: Any) -> bool:
    """Compare JSON values; scalars as text so that 2 matches "2" and true matches "true"."""
    scalars = (str, int, float, bool, type(None))
    if isinstance(actual, scalars) and isinstance(expected, scalars):
        return _text(actual) == _text(expected)
    return bool(actual == expected)


def judge(
    status: int | None,
    body: str,
    transport_error: str | None,
    status_codes: list[int],
    expect_json: Mapping[str, Any] | None,
) -> str | None:
    """Return why an answer is unhealthy, or None when it is healthy."""
    if transport_error is not None:
        return transport_error
    if status not in status_codes:
        return f"status {status}, expected {' or '.join(str(c) for c in status_codes)}"
    if not expect_json:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return "body is not JSON"
    wrong = []
    for key, expected in expect_json.items():
        found, actual = _lookup(document, key)
        if not found:
            wrong.append(f"{key} missing")
        elif not _same(actual, expected):
            wrong.append(f"{key}={actual!r}, expected {expected!r}")
    return "; ".join(wrong) or None


def check_url(
    url: str,
    request_timeout: float,
    status_codes: list[int],
    expect_json: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None = None,
    validate_certs: bool = True,
) -> Answer:
    status, body, error = fetch(url, request_timeout, headers, validate_certs)
    problem = judge(status, body, error, status_codes, expect_json)
    return Answer(url, status, body[:BODY_EXCERPT], problem, problem is None)


def run_gate(
    urls: list[str],
    *,
    status_codes: list[int],
    expect_json: Mapping[str, Any] | None = None,
    timeout: float = 60,
    interval: float = 1,
    request_timeout: float = 5,
    consecutive: int = 3,
    headers: Mapping[str, str] | None = None,
    validate_certs: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> GateResult:
    """Poll every URL in rounds until ``consecutive`` healthy rounds or ``timeout``."""
    start = clock()
    deadline = start + timeout
    attempts = 0
    streak = 0
    answers: list[Answer] = []
    while True:
        round_start = clock()
        attempts += 1
        per_request = max(0.1, min(request_timeout, deadline - round_start))
        answers = [
            check_url(url, per_request, status_codes, expect_json, headers, validate_certs)
            for url in urls
        ]
        streak = streak + 1 if all(a.ok for a in answers) else 0
        now = clock()
        if streak >= consecutive:
            return GateResult(True, attempts, round(now - start, 2), streak, answers)
        next_round = round_start + interval
        if next_round > deadline:
            return GateResult(False, attempts, round(now - start, 2), streak, answers)
        if next_round > now:
            sleep(next_round - now)


def failure_message(
    result: GateResult,
    status_codes: list[int],
    expect_json: Mapping[str, Any] | None,
    consecutive: int,
) -> str:
    failing = [a for a in result.last_answers if not a.ok] or result.last_answers
    described = "; ".join(
        f"{a.url} -> {a.error}"
        if a.status is None
        else f"{a.url} -> status {a.status} ({a.error or 'healthy'}), body: {a.body[:120]!r}"
        for a in result.last_answers
    )
    expected = f"status {' or '.join(str(c) for c in status_codes)}"
    if expect_json:
        expected += f" with JSON {json.dumps(dict(expect_json), sort_keys=True)}"
    return (
        f"health gate failed for {', '.join(a.url for a in failing)}: after {result.attempts} "
        f"attempts in {result.elapsed} s the last answers were: {described}; expected "
        f"{expected} in {consecutive} consecutive rounds (got {result.consecutive_ok})"
    )


Inspect = Callable[[str], dict[str, Any]]


def read_containers(names: list[str], inspect: Inspect) -> dict[str, dict[str, Any] | None]:
    """Each container by name as ``bluegreen.summarize_container`` sees it; None when gone."""
    found: dict[str, dict[str, Any] | None] = {}
    for name in names:
        try:
            found[name] = inspect(name)
        except OSError:
            found[name] = None
    return found


def container_problems(
    before: Mapping[str, dict[str, Any] | None],
    after: Mapping[str, dict[str, Any] | None],
    image_id: str | None,
) -> list[str]:
    """Why the containers did not keep running through the gate; empty when they did."""
    problems = []
    for name, now in after.items():
        then = before.get(name)
        if now is None or then is None:
            problems.append(f"{name} is gone (Docker does not know it)")
            continue
        restarts = int(now["restart_count"] or 0) - int(then["restart_count"] or 0)
        if not now["running"]:
            problems.append(f"{name} is not running (exit code {now['exit_code']})")
        if restarts:
            problems.append(f"{name} restarted {restarts} time(s) while it was gated")
        if image_id and now["image_id"] != image_id:
            problems.append(f"{name} runs image {now['image_id']} instead of {image_id}")
    return problems


ARGUMENT_SPEC: dict[str, Any] = {
    "urls": {"type": "list", "elements": "str", "required": True, "aliases": ["url"]},
    "status_code": {"type": "list", "elements": "int", "default": [200]},
    "expect_json": {"type": "dict"},
    "timeout": {"type": "float", "default": 60},
    "interval": {"type": "float", "default": 1},
    "request_timeout": {"type": "float", "default": 5},
    "consecutive": {"type": "int", "default": 3},
    "headers": {"type": "dict", "default": {}},
    "validate_certs": {"type": "bool", "default": True},
    "containers": {"type": "list", "elements": "str", "default": []},
    "image_id": {"type": "str"},
    "docker_socket": {"type": "path", "default": "/var/run/docker.sock"},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
    )
    p = module.params
    if not p["urls"]:
        module.fail_json(msg="urls must name at least one URL to check")
    if p["consecutive"] < 1:
        module.fail_json(msg=f"consecutive must be 1 or more, got {p['consecutive']}")
    for name in ("timeout", "interval", "request_timeout"):
        if p[name] < 0 or (name == "request_timeout" and p[name] == 0):
            module.fail_json(msg=f"{name} must be a positive number of seconds, got {p[name]}")
    headers = {str(k): str(v) for k, v in (p["headers"] or {}).items()}

    if module.check_mode:
        module.exit_json(
            changed=False,
            attempts=0,
            elapsed=0.0,
            consecutive_ok=0,
            last_answers=[],
            would_check={
                "urls": p["urls"],
                "status_code": p["status_code"],
                "expect_json": p["expect_json"],
                "consecutive": p["consecutive"],
                "timeout": p["timeout"],
            },
            msg="check mode: nothing polled",
        )

    def inspect(name: str) -> dict[str, Any]:
        return docker_inspected(p["docker_socket"], name, p["request_timeout"])

    names = list(p["containers"] or [])
    before = read_containers(names, inspect)
    result = run_gate(
        p["urls"],
        status_codes=p["status_code"],
        expect_json=p["expect_json"],
        timeout=p["timeout"],
        interval=p["interval"],
        request_timeout=p["request_timeout"],
        consecutive=p["consecutive"],
        headers=headers,
        validate_certs=p["validate_certs"],
    )
    output: dict[str, Any] = {
        "changed": False,
        "attempts": result.attempts,
        "elapsed": result.elapsed,
        "consecutive_ok": result.consecutive_ok,
        "last_answers": [asdict(a) for a in result.last_answers],
    }
    if not result.passed:
        module.fail_json(
            msg=failure_message(result, p["status_code"], p["expect_json"], p["consecutive"]),
            **output,
        )
    if names:
        after = read_containers(names, inspect)
        output["containers"] = [after[name] for name in names]
        problems = container_problems(before, after, p["image_id"])
        if problems:
            module.fail_json(
                msg=f"the answers were healthy, but not the containers behind them: "
                f"{'; '.join(problems)}",
                **output,
            )
    module.exit_json(**output)


if __name__ == "__main__":
    main()
