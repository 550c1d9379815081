"""scripts/bench-judgement.py, seeded: the sequential judgement meets issue 24's targets on
simulated per-second counter reads, and prints its figures (pytest -s shows them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench-judgement.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_judgement", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_judgement"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load()


@pytest.fixture(scope="module")
def figures(bench: ModuleType) -> dict[str, dict[str, Any]]:
    measured: dict[str, dict[str, Any]] = bench.measure(count=200, seed=24, null_runs=800)
    print("\n" + bench.report(measured))
    return measured


def test_a_bad_canary_at_a_5_percent_step_is_stopped_within_30_s(
    bench: ModuleType, figures: dict[str, dict[str, Any]]
) -> None:
    """30 % errors, 1 request/s of 20 to the canary: aborted in every run; in 9 of 10 runs
    within 30 s of its first bad answer (the live test adds the way back, about 3 s) and
    with at most 10 of its requests failed."""
    for scenario in (bench.BAD_CANARY, bench.BAD_CANARY_NOISY):
        f = figures[scenario.name]
        assert f["aborted"] == 1.0, f
        assert f["seconds_p90"] <= 20 and f["seconds_median"] <= 10, f
        assert f["failed_p90"] <= 10, f


def test_a_bad_full_switch_is_judged_within_10_s(
    bench: ModuleType, figures: dict[str, dict[str, Any]]
) -> None:
    f = figures[bench.BAD_SWITCH.name]
    assert f["aborted"] == 1.0 and f["by"] == ["sprt"], f
    assert f["seconds_p90"] <= 10 and f["seconds_median"] <= 5, f


def test_a_healthy_colour_at_2_requests_a_second_passes_within_the_bound(
    bench: ModuleType, figures: dict[str, dict[str, Any]]
) -> None:
    for scenario in bench.HEALTHY:
        f = figures[scenario.name]
        assert f["passed"] >= 0.99 and f["aborted"] <= 0.01, (scenario.name, f)
        assert f["good_p99"] <= 20, (scenario.name, f)


def test_healthy_colours_at_the_allowed_share_are_aborted_less_often_than_alpha(
    bench: ModuleType, figures: dict[str, dict[str, Any]]
) -> None:
    for scenario in bench.AT_ALLOWED:
        f = figures[scenario.name]
        assert f["rate"] < f["alpha"], (scenario.name, f)


def test_the_figures_are_the_same_every_run(bench: ModuleType) -> None:
    first = bench.runs(bench.BAD_CANARY, 20, 7)
    assert bench.runs(bench.BAD_CANARY, 20, 7) == first
