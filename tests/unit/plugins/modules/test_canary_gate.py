"""Unit tests for library/canary_gate.py: counters read from mtail's text, the
growth since the step began, and the judgement against the stable colour."""

from __future__ import annotations

from typing import Any

import canary_gate
import pytest

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


def judge(texts: list[str], healthy: bool = True, **extra: Any) -> dict[str, Any]:
    feed = Feed(texts)
    return canary_gate.run(
        {**PARAMS, **extra}, feed.read, lambda: healthy, lambda: feed.now, feed.sleep
    )


BASE = {("blue", "backend", "200"): 1000, ("green", "backend", "200"): 10}


def test_counts_are_the_growth_since_the_step_began() -> None:
    later = {**BASE, ("blue", "backend", "200"): 1900, ("green", "backend", "200"): 110}
    result = judge([exposition(BASE), exposition(later)])
    assert result["verdict"] == "pass"
    assert result["colors"]["green"]["requests"] == 100
    assert result["colors"]["blue"]["requests"] == 900
    assert result["colors"]["green"]["services"]["backend"]["p99_s"] == 0.01


def test_a_canary_with_30_percent_errors_fails_at_once() -> None:
    bad = {**BASE, ("green", "backend", "200"): 45, ("green", "backend", "500"): 15}
    result = judge([exposition(BASE), exposition(bad)])
    assert result["verdict"] == "fail" and result["rounds"] == 1
    assert result["reasons"] == ["5xx share 30.0% of 50 requests is above 10.0%"]


def test_errors_are_judged_against_the_stable_colour() -> None:
    # 8 % is under the absolute 10 %, but 8 points above a stable colour with none.
    worse = {
        **BASE,
        ("blue", "backend", "200"): 2000,
        ("green", "backend", "200"): 102,
        ("green", "backend", "502"): 8,
    }
    result = judge([exposition(BASE), exposition(worse)])
    assert result["verdict"] == "fail"
    assert "more than 5.0% above the stable colour's 0.0%" in result["reasons"][0]


def test_too_few_requests_are_not_judged_and_end_as_insufficient() -> None:
    few = {**BASE, ("green", "backend", "500"): 10}
    result = judge([exposition(BASE), exposition(few)])
    assert result["verdict"] == "insufficient_data" and result["reasons"] == []
    assert result["rounds"] == 10


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
