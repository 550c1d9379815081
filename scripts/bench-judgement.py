#!/usr/bin/env python3
"""Measure the sequential judgement of a colour (library/canary_gate.py) on simulated traffic.

Drives canary_gate's own loop (``run``) with per-second counter reads made
from a seeded random stream: each second a colour gets Poisson(rate) requests,
each an error with its error share. The clock is simulated, so hundreds of
runs take seconds. Prints, per scenario, what the judgement decided and when:

  (a) a colour failing 30 %: at a 5 % canary step of 20 requests/s (1/s to the
      canary) and after a full switch (20/s, no stable traffic): seconds from
      its first bad answer to the abort, and how many of its requests failed
      until then;
  (b) a healthy colour (0 % or 0.5 % errors) at 2 requests/s: whether it passes
      within the bound (the step's duration, or the max wait), and when;
  (c) colours exactly at the allowed share (10 %), canary and stable alike:
      how often a healthy colour is aborted (the false-abort rate), against alpha.

The figures are what the judgement decides from the counters; the whole-stack
tests (molecule/default/tests/test_10_canary.py, test_4_analysis.py) measure
the same on a live host, where the way back through nginx adds a few seconds.
tests/unit/test_bench_judgement.py runs this file and asserts the targets.

Usage: scripts/bench-judgement.py [--runs 400] [--seed 24]
Needs the repository's virtualenv (ansible, for the module's imports).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "library"))
import ansible.module_utils  # noqa: E402

# The modules import the repository's module_utils as Ansible packs them.
if str(ROOT / "module_utils") not in ansible.module_utils.__path__:
    ansible.module_utils.__path__.append(str(ROOT / "module_utils"))

import canary_gate  # noqa: E402

# The role's defaults (roles/bluegreen/defaults/main.yml) as canary_step.yml passes them.
DEFAULTS: dict[str, Any] = {
    "canary": "green",
    "stable": "blue",
    "interval": 1.0,
    "min_requests": 50,
    "max_error_ratio": 0.1,
    "max_error_ratio_increase": 0.05,
    "alpha": 0.01,
    "beta": 0.05,
    "p1_factor": 3.0,
    "prior": [1.0, 1.0],
    "judge_p99": False,
    "max_p99_s": 2.0,
    "max_p99_factor": 3.0,
    "p99_floor_s": 0.5,
    "p99_min_requests": 100,
    "health_urls": [],
    "health_failures": 3,
}
STEP = {"duration": 60.0, "max_wait": 180.0}  # a canary step: analysis_s, the max wait
WINDOW = {"duration": 120.0, "max_wait": 0.0}  # the analysis after a full switch


@dataclass
class Scenario:
    name: str
    canary_rate: float  # requests/s to the judged colour
    canary_errors: float  # its error share
    stable_rate: float
    stable_errors: float
    judgement: Mapping[str, float]


@dataclass
class Outcome:
    verdict: str
    decided_by: str
    elapsed: float  # seconds from the start of the judgement to its verdict
    first_bad: float | None  # when the judged colour first answered with an error
    failed: int  # the judged colour's errors until the verdict
    good_at: float | None  # when the SPRT reached its good boundary


def poisson(rng: random.Random, rate: float) -> int:
    """Knuth's method (rates here are at most a few dozen a second)."""
    limit, count, product = math.exp(-rate), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class Traffic:
    """Cumulative counters of both colours, one more second of traffic per read."""

    def __init__(self, scenario: Scenario, rng: random.Random) -> None:
        self.scenario = scenario
        self.rng = rng
        self.now = 0.0
        self.totals: dict[tuple[str, ...], float] = {}
        self.first_bad: float | None = None
        self.failed = 0

    def sleep(self, seconds: float) -> None:
        """One read interval of traffic."""
        s, rng = self.scenario, self.rng
        for color, rate, share in (
            (DEFAULTS["canary"], s.canary_rate, s.canary_errors),
            (DEFAULTS["stable"], s.stable_rate, s.stable_errors),
        ):
            requests = poisson(rng, rate * seconds)
            errors = sum(rng.random() < share for _ in range(requests)) if share else 0
            for status, count in (("200", requests - errors), ("500", errors)):
                key = (color, "backend", status)
                self.totals[key] = self.totals.get(key, 0.0) + count
            if errors and color == DEFAULTS["canary"]:
                self.failed += errors
                if self.first_bad is None:  # the earliest of this second's errors
                    self.first_bad = self.now + seconds * min(rng.random() for _ in range(errors))
        self.now += seconds

    def read(self) -> canary_gate.Reading:
        return dict(self.totals), {}


def judge_once(scenario: Scenario, rng: random.Random) -> Outcome:
    traffic = Traffic(scenario, rng)
    params = {**DEFAULTS, **scenario.judgement}
    result = canary_gate.run(
        params,
        traffic.read,
        lambda: True,
        clock=lambda: traffic.now,
        sleep=traffic.sleep,
        baseline=({}, {}),  # read before traffic moved, as canary_step.yml does
    )
    return Outcome(
        result["verdict"],
        result["decided_by"],
        result["elapsed"],
        traffic.first_bad,
        traffic.failed,
        result["colors"][DEFAULTS["canary"]]["sprt"]["decided_at_s"]
        if result["colors"][DEFAULTS["canary"]]["sprt"]["decision"] == "good"
        else None,
    )


def runs(scenario: Scenario, count: int, seed: int) -> list[Outcome]:
    rng = random.Random(f"{seed}:{scenario.name}")
    return [judge_once(scenario, rng) for _ in range(count)]


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


BAD_CANARY = Scenario("(a) 30 % errors, 5 % step of 20 req/s", 1.0, 0.30, 19.0, 0.0, STEP)
BAD_CANARY_NOISY = Scenario(
    "(a) 30 % errors, 5 % step of 20 req/s, stable at 0.5 %", 1.0, 0.30, 19.0, 0.005, STEP
)
BAD_SWITCH = Scenario("(a) 30 % errors, full switch at 20 req/s", 20.0, 0.30, 0.0, 0.0, WINDOW)
HEALTHY = [
    Scenario("(b) 0 % errors, canary at 2 req/s", 2.0, 0.0, 38.0, 0.005, STEP),
    Scenario("(b) 0.5 % errors, canary at 2 req/s", 2.0, 0.005, 38.0, 0.005, STEP),
    Scenario("(b) 0.5 % errors, full switch at 2 req/s", 2.0, 0.005, 0.0, 0.0, WINDOW),
]
LOW = Scenario("(b) 0.5 % errors, 5 % step of 2 req/s", 0.1, 0.005, 1.9, 0.005, STEP)
AT_ALLOWED = [
    Scenario("(c) 10 % = allowed, 5 % step of 20 req/s", 1.0, 0.10, 19.0, 0.10, STEP),
    Scenario("(c) 10 % = allowed, 50 % step of 20 req/s", 10.0, 0.10, 10.0, 0.10, STEP),
    Scenario("(c) 10 % = allowed, full switch at 20 req/s", 20.0, 0.10, 0.0, 0.0, WINDOW),
]


def deciders(outcomes: Iterable[Outcome]) -> list[str]:
    """The tests that decided, each named once ("sprt, versus_stable" names two)."""
    return sorted({name for o in outcomes for name in o.decided_by.split(", ")})


def bad_figures(scenario: Scenario, count: int, seed: int) -> dict[str, Any]:
    outcomes = runs(scenario, count, seed)
    after = [o.elapsed - (o.first_bad or 0.0) for o in outcomes]
    return {
        "runs": count,
        "aborted": sum(o.verdict == "fail" for o in outcomes) / count,
        "by": deciders(o for o in outcomes if o.verdict == "fail"),
        "seconds_median": statistics.median(after),
        "seconds_p90": quantile(after, 0.9),
        "seconds_p99": quantile(after, 0.99),
        "seconds_max": max(after),
        "failed_median": statistics.median(o.failed for o in outcomes),
        "failed_p90": quantile([float(o.failed) for o in outcomes], 0.9),
        "failed_max": max(o.failed for o in outcomes),
    }


def healthy_figures(scenario: Scenario, count: int, seed: int) -> dict[str, Any]:
    outcomes = runs(scenario, count, seed)
    passed = [o for o in outcomes if o.verdict == "pass"]
    good = [o.good_at for o in outcomes if o.good_at is not None]
    return {
        "runs": count,
        "passed": len(passed) / count,
        "held": sum(o.verdict == "insufficient_data" for o in outcomes) / count,
        "aborted": sum(o.verdict == "fail" for o in outcomes) / count,
        "bound_s": max(scenario.judgement["duration"], scenario.judgement["max_wait"]),
        "seconds_median": statistics.median(o.elapsed for o in passed) if passed else None,
        "seconds_max": max(o.elapsed for o in passed) if passed else None,
        "good_median": statistics.median(good) if good else None,
        "good_p99": quantile(good, 0.99) if good else None,
    }


def false_aborts(scenario: Scenario, count: int, seed: int) -> dict[str, Any]:
    outcomes = runs(scenario, count, seed)
    aborted = [o for o in outcomes if o.verdict == "fail"]
    return {
        "runs": count,
        "rate": len(aborted) / count,
        "alpha": DEFAULTS["alpha"],
        "by": deciders(aborted),
    }


def measure(count: int = 400, seed: int = 24, null_runs: int = 1500) -> dict[str, dict[str, Any]]:
    figures = {
        BAD_CANARY.name: bad_figures(BAD_CANARY, count, seed),
        BAD_CANARY_NOISY.name: bad_figures(BAD_CANARY_NOISY, count, seed),
        BAD_SWITCH.name: bad_figures(BAD_SWITCH, count, seed),
    }
    for scenario in [*HEALTHY, LOW]:
        figures[scenario.name] = healthy_figures(scenario, count, seed)
    for scenario in AT_ALLOWED:
        figures[scenario.name] = false_aborts(scenario, null_runs, seed)
    return figures


def report(figures: Mapping[str, Mapping[str, Any]]) -> str:
    d = DEFAULTS
    lines = [
        f"Judgement of a colour on per-second counter reads (canary_gate.run, simulated): "
        f"alpha {d['alpha']} (half a test), beta {d['beta']}, p0 {d['max_error_ratio']:.0%}, "
        f"p1 {d['p1_factor']:g} x p0, prior Beta(1, 1), a step {STEP['duration']:g} s "
        f"(max wait {STEP['max_wait']:g} s), the analysis {WINDOW['duration']:g} s"
    ]
    for name, f in figures.items():
        if "seconds_p90" in f:
            lines.append(
                f"{name}: aborted in {f['aborted']:.1%} of {f['runs']} runs "
                f"(by {', '.join(f['by'])}); "
                f"first bad answer to abort median {f['seconds_median']:.1f} s, 90th percentile "
                f"{f['seconds_p90']:.1f} s, 99th {f['seconds_p99']:.1f} s, max "
                f"{f['seconds_max']:.1f} s; its failed requests "
                f"median {f['failed_median']:g}, 90th percentile {f['failed_p90']:g}, "
                f"max {f['failed_max']}"
            )
        elif "passed" in f:
            when = (
                f"SPRT good after median {f['good_median']:.1f} s (99th percentile "
                f"{f['good_p99']:.1f} s); passed after median {f['seconds_median']:.0f} s, "
                f"at most {f['seconds_max']:.0f} s"
                if f["seconds_median"] is not None and f["good_median"] is not None
                else "never passed"
            )
            lines.append(
                f"{name}: passed {f['passed']:.1%}, held for no decision {f['held']:.1%}, "
                f"aborted {f['aborted']:.1%} of {f['runs']} runs within the {f['bound_s']:g} s "
                f"bound; {when}"
            )
        else:
            lines.append(
                f"{name}: false aborts {f['rate']:.2%} of {f['runs']} healthy runs "
                f"(alpha {f['alpha']:.0%}){' by ' + ', '.join(f['by']) if f['by'] else ''}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400, help="runs per scenario (a) and (b)")
    parser.add_argument("--null-runs", type=int, default=1500, help="runs per scenario (c)")
    parser.add_argument("--seed", type=int, default=24)
    args = parser.parse_args()
    print(report(measure(args.runs, args.seed, args.null_runs)))


if __name__ == "__main__":
    main()
