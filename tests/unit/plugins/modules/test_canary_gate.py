"""Unit tests for library/canary_gate.py: counters read from mtail's text, the
growth since the baseline, the sequential judgement (against the allowed share
and the stable colour), waiting for evidence at low traffic, p99 and health,
and the module itself against a local exporter."""

from __future__ import annotations

import http.server
import re
import sys
from pathlib import Path
from typing import Any

import canary_gate
import pytest
import yaml
from test_module_docs import compare

# tests/unit's local HTTP server helper (tests/unit/httpstub.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from httpstub import serving

PARAMS: dict[str, Any] = {
    "canary": "green",
    "stable": "blue",
    "duration": 10,
    "interval": 1,
    "min_requests": 50,
    "max_error_ratio": 0.1,
    "max_error_ratio_increase": 0.05,
    "max_p99_s": 2.0,
    "max_p99_factor": 3.0,
    "p99_floor_s": 0.25,
    "p99_min_requests": 100,
    "health_urls": ["http://127.0.0.1:8201/health"],
    "health_failures": 3,
    "alpha": 0.01,
    "beta": 0.05,
    "p1_factor": 3.0,
    "prior": [1.0, 1.0],
    "max_wait": 0,
    "judge_p99": True,
}


def exposition(
    counts: dict[tuple[str, str, str], int], slow: dict[str, float] | None = None
) -> str:
    """mtail's text for requests per (colour, service, status); `slow` puts a colour's requests
    in the bucket of that many seconds, else all under 10 ms."""
    lines = ["# TYPE edge_http_requests_total counter"]
    per: dict[tuple[str, str], int] = {}
    for (color, service, status), n in counts.items():
        lines.append(
            f'edge_http_requests_total{{color="{color}",service="{service}",status="{status}"}} {n}'
        )
        per[(color, service)] = per.get((color, service), 0) + n
    for (color, service), n in per.items():
        limit = (slow or {}).get(color, 0.01)
        for le in ("0.01", "0.1", "0.5", "1", "5", "+Inf"):
            inside = n if float(le) >= limit else 0
            lines.append(
                f'edge_http_request_duration_seconds_bucket{{color="{color}",'
                f'service="{service}",le="{le}"}} {inside}'
            )
    return "\n".join(lines) + "\n"


class Feed:
    """Successive reads of the exporter, then a fake clock that advances per sleep."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.reads = 0
        self.now = 0.0

    def read(self) -> str:
        text = self.texts[min(self.reads, len(self.texts) - 1)]
        self.reads += 1
        return text

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def judge(
    texts: list[str], healthy: bool = True, baseline: str | None = None, **extra: Any
) -> dict[str, Any]:
    feed = Feed(texts)
    return canary_gate.run(
        {**PARAMS, **extra},
        lambda: canary_gate.parse(feed.read()),
        lambda: healthy,
        lambda: feed.now,
        feed.sleep,
        baseline=None if baseline is None else canary_gate.parse(baseline),
    )


BASE = {("blue", "backend", "200"): 1000, ("green", "backend", "200"): 10}


def test_counts_are_the_growth_since_the_step_began() -> None:
    later = {**BASE, ("blue", "backend", "200"): 1900, ("green", "backend", "200"): 110}
    result = judge([exposition(BASE), exposition(later)])
    assert (result["verdict"], result["decided_by"]) == ("pass", "sprt")
    assert result["colors"]["green"]["requests"] == 100
    assert result["colors"]["blue"]["requests"] == 900
    assert result["colors"]["green"]["services"]["backend"]["p99_s"] == 0.01


def test_the_baseline_read_before_traffic_moved_counts_every_request() -> None:
    bad = {**BASE, ("green", "backend", "200"): 15, ("green", "backend", "500"): 7}
    # Its own first read already holds the 7 errors: from there nothing grows.
    assert judge([exposition(bad)], duration=3)["colors"]["green"]["errors"] == 0
    result = judge([exposition(bad)], baseline=exposition(BASE), duration=3)
    assert result["colors"]["green"] | {"services": None} == {
        "requests": 12,
        "errors": 7,
        "error_ratio": 0.5833,
        "services": None,
        "sprt": result["colors"]["green"]["sprt"],
        "versus_stable": result["colors"]["green"]["versus_stable"],
    }
    assert result["verdict"] == "fail" and result["rounds"] == 1


def test_a_canary_with_30_percent_errors_fails_at_once() -> None:
    bad = {**BASE, ("green", "backend", "200"): 45, ("green", "backend", "500"): 15}
    result = judge([exposition(BASE), exposition(bad)])
    assert result["verdict"] == "fail" and result["rounds"] == 1
    assert result["decided_by"] == "sprt"
    assert result["reasons"] == [
        "its 5xx share is above the allowed 10.0%: 15 of 50 requests failed (30.0%); SPRT "
        "log-likelihood ratio 7.68 >= 5.30 (p1 30.0%, alpha 0.005, beta 0.05) after 1 s"
    ]
    sprt = result["colors"]["green"]["sprt"]
    assert (sprt["decision"], sprt["decided_at_s"]) == ("bad", 1)
    # No traffic on the stable colour since: nothing to compare with.
    assert result["colors"]["green"]["versus_stable"]["decision"] == "not applicable"


def test_errors_are_judged_against_the_stable_colour() -> None:
    # 8 % is under the allowed 10 % (the SPRT calls it good), but the stable colour has none.
    worse = {
        **BASE,
        ("blue", "backend", "200"): 2000,
        ("green", "backend", "200"): 102,
        ("green", "backend", "502"): 8,
    }
    result = judge([exposition(BASE), exposition(worse)])
    assert (result["verdict"], result["decided_by"]) == ("fail", "versus_stable")
    assert result["colors"]["green"]["sprt"]["decision"] == "good"
    versus = result["colors"]["green"]["versus_stable"]
    assert versus["theta0"] == pytest.approx(100 / 1100) and versus["e_value"] > 1e6
    assert result["reasons"][0].startswith(
        "its 5xx share is worse than blue's: 8 of 100 requests failed (8.0%), blue 0 of 1000 "
        "requests failed (0.0%); e-value "
    )
    assert "(theta0 0.091, prior Beta(1, 1) on theta >= theta0) after 1 s" in result["reasons"][0]


def test_a_small_difference_from_the_stable_colour_is_tolerated() -> None:
    # 4 % against 0 %: significant, but within max_error_ratio_increase (5 points).
    close = {
        **BASE,
        ("blue", "backend", "200"): 11000,
        ("green", "backend", "200"): 970,
        ("green", "backend", "500"): 40,
    }
    result = judge([exposition(BASE), exposition(close)], p99_min_requests=10_000)
    assert result["colors"]["green"]["versus_stable"]["e_value"] > 200
    assert (result["verdict"], result["decided_by"]) == ("pass", "sprt")


def test_a_healthy_canary_at_low_traffic_passes_once_the_sprt_says_good() -> None:
    """Two requests a second, no errors: good after twelve; the step still runs its duration."""
    reads = [
        exposition({**BASE, ("green", "backend", "200"): 10 + 2 * second})
        for second in range(0, 30)
    ]
    result = judge(reads, duration=10)
    assert (result["verdict"], result["decided_by"], result["rounds"]) == ("pass", "sprt", 10)
    assert result["colors"]["green"]["sprt"]["decided_at_s"] == 6
    assert "green (judged): 0 of 20 requests failed (0.0%)" in result["summary"]
    assert ": good at 6 s" in result["summary"]
    assert result["assumptions"] == {
        "alpha": 0.01,
        "alpha_per_test": 0.005,
        "beta": 0.05,
        "p0": 0.1,
        "p1": 0.3,
        "prior": [1.0, 1.0],
        "tolerance": 0.05,
        "min_requests": 50,
        "duration_s": 10.0,
        "bound_s": 10.0,
    }


def test_without_evidence_it_waits_up_to_the_bound_then_has_no_decision() -> None:
    """One request in 15 s: nothing to decide at the end of the step, nor at the bound."""
    trickle = exposition({**BASE, ("green", "backend", "200"): 11})
    result = judge([exposition(BASE), trickle], duration=10, max_wait=25)
    assert (result["verdict"], result["decided_by"], result["rounds"]) == (
        "insufficient_data",
        "no decision",
        25,
    )
    assert result["reasons"] == [] and result["assumptions"]["bound_s"] == 25
    # The evidence comes after the step's duration, within the bound: it passes then.
    later = (
        [exposition(BASE)] + [trickle] * 14 + [exposition(BASE | {("green", "backend", "200"): 30})]
    )
    result = judge(later, duration=10, max_wait=25)
    assert (result["verdict"], result["rounds"]) == ("pass", 15)


def test_a_share_the_tests_cannot_call_has_no_decision() -> None:
    # 15 %, above the allowed 10 % and below p1 30 %, like the stable colour: neither test decides.
    between = {
        **BASE,
        ("blue", "backend", "200"): 1510,
        ("blue", "backend", "500"): 90,
        ("green", "backend", "200"): 61,
        ("green", "backend", "500"): 9,
    }
    result = judge([exposition(BASE), exposition(between)], duration=5)
    assert result["colors"]["green"]["sprt"]["decision"] == "continue"
    assert (result["verdict"], result["rounds"]) == ("insufficient_data", 5)


def test_a_slow_canary_service_fails_against_the_stable_p99() -> None:
    more = {**BASE, ("blue", "backend", "200"): 1200, ("green", "backend", "200"): 110}
    few = {**BASE, ("blue", "backend", "200"): 1200, ("green", "backend", "200"): 80}
    assert (
        judge([exposition(BASE, slow={"green": 0.5}), exposition(few, slow={"green": 0.5})])[
            "verdict"
        ]
        == "pass"
    ), "a p99 of 70 requests is judged"
    slow = exposition(more, slow={"green": 0.5})
    result = judge([exposition(BASE, slow={"green": 0.5}), slow])
    assert result["verdict"] == "fail"
    assert result["reasons"] == ["backend p99 0.5 s is above 0.25 s"]


def test_a_canary_that_stops_answering_its_health_check_fails() -> None:
    result = judge([exposition(BASE)], healthy=False)
    assert result["verdict"] == "fail" and result["rounds"] == 3
    assert "health check failed 3 times in a row" in result["reasons"][0]


def test_a_restarted_exporter_counts_from_zero() -> None:
    assert canary_gate.delta({("g", "s", "200"): 5.0}, {("g", "s", "200"): 100.0}) == {
        ("g", "s", "200"): 5.0
    }


@pytest.mark.parametrize(
    ("buckets", "expected"),
    [
        ({"0.01": 99, "0.1": 100, "+Inf": 100}, 0.01),
        ({"0.01": 98, "0.1": 100, "+Inf": 100}, 0.1),
        ({"0.01": 0, "+Inf": 0}, None),
    ],
)
def test_p99_is_the_bucket_holding_the_99th_percentile(
    buckets: dict[str, float], expected: float | None
) -> None:
    assert canary_gate.p99(buckets) == expected


def test_lines_of_other_metrics_and_comments_are_ignored() -> None:
    text = (
        '# HELP x\nother_total{color="green"} 9\n'
        'edge_http_requests_total{color="green",service="backend",status="200"} 3\n'
    )
    requests, buckets = canary_gate.parse(text)
    assert requests == {("green", "backend", "200"): 3.0} and buckets == {}


# --- the module -------------------------------------------------------------------------


class Exporter(http.server.BaseHTTPRequestHandler):
    """mtail's /metrics: the canary answers 20 more requests a read, 6 of them 500."""

    reads = 0

    def do_GET(self) -> None:
        Exporter.reads += 1
        n = Exporter.reads
        body = exposition(
            {
                ("blue", "backend", "200"): 1000 + 100 * n,
                ("green", "backend", "200"): 14 * n,
                ("green", "backend", "500"): 6 * n,
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def module_args(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "metrics_url": url,
        "canary": "green",
        "stable": "blue",
        "duration": 2,
        "interval": 0.05,
        **extra,
    }


def test_module_reads_the_exporter_and_fails_a_bad_canary(run_module: Any) -> None:
    Exporter.reads = 0
    with serving(Exporter) as port:
        result = run_module(canary_gate.main, module_args(f"http://127.0.0.1:{port}/metrics"))
    assert result["verdict"] == "fail" and not result.get("failed")
    assert result["decided_by"] in ("sprt", "versus_stable", "sprt, versus_stable")
    assert result["summary"].startswith("green (judged): ")
    assert "p0 10.0%, p1 30.0%, prior Beta(1, 1)" in result["summary"]


def test_module_with_a_baseline_judges_from_it(run_module: Any) -> None:
    Exporter.reads = 0
    with serving(Exporter) as port:
        result = run_module(
            canary_gate.main,
            module_args(f"http://127.0.0.1:{port}/metrics", baseline=exposition(BASE)),
        )
    green = result["colors"]["green"]
    assert (green["requests"], green["errors"]) == (20 - 10, 6)  # the first read, less BASE
    assert result["rounds"] == 1 and result["verdict"] == "fail"


def test_module_without_the_exporter_says_nothing_was_judged(
    run_module: Any, closed_port: int
) -> None:
    result = run_module(canary_gate.main, module_args(f"http://127.0.0.1:{closed_port}/metrics"))
    assert result["failed"]
    assert (
        f"cannot read the edge metrics at http://127.0.0.1:{closed_port}/metrics" in result["msg"]
    )
    assert "green was NOT judged" in result["msg"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"max_error_ratio": 0}, "allowed error share must be between 0 and 1"),
        ({"alpha": 0.7}, "alpha .* must be between 0 and 0.5"),
        ({"p1_factor": 1}, "must be above 1"),
        ({"prior": [1, 0]}, "prior must be two positive numbers"),
        ({"stable": "green"}, "two colours"),
    ],
)
def test_module_refuses_a_model_that_cannot_work(
    run_module: Any, extra: dict[str, Any], message: str
) -> None:
    result = run_module(canary_gate.main, module_args("http://127.0.0.1:9/metrics", **extra))
    assert result["failed"] and re.search(message, result["msg"]), result["msg"]


def test_documentation_matches_argument_spec() -> None:
    doc = yaml.safe_load(canary_gate.DOCUMENTATION)
    assert doc["module"] == "canary_gate"
    assert compare(doc["options"], canary_gate.ARGUMENT_SPEC, "canary_gate") == []
    assert set(doc["attributes"]) == {"check_mode", "diff_mode"}
    assert any("canary_gate" in task for task in yaml.safe_load(canary_gate.EXAMPLES))
    assert set(yaml.safe_load(canary_gate.RETURN)) >= {
        "verdict",
        "decided_by",
        "reasons",
        "colors",
        "assumptions",
        "summary",
    }
