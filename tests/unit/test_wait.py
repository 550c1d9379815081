"""harness/wait.py: the one polling helper, on an injected clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.wait import WaitTimeout, until


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_the_first_true_value_without_sleeping_after_it() -> None:
    clock = Clock()
    answers: Iterator[object] = iter([None, [], {"up": 1}])
    got = until("up", lambda: next(answers), 10, 2, clock=clock, sleep=clock.sleep)
    assert got == {"up": 1}
    assert clock.sleeps == [2, 2]


def test_times_out_with_what_and_the_last_value_and_detail() -> None:
    clock = Clock()
    with pytest.raises(WaitTimeout) as caught:
        until(
            "the edge",
            lambda: 0,
            5,
            1,
            clock=clock,
            sleep=clock.sleep,
            detail=lambda: "log tail",
        )
    text = str(caught.value)
    assert "timed out after 5 s waiting for the edge (last: 0)" in text
    assert text.endswith("\nlog tail")
    # Checked at 0..5 s: a last check at the deadline, no sleep past it.
    assert clock.sleeps == [1, 1, 1, 1, 1]
    assert isinstance(caught.value, AssertionError)  # pytest reports a failed assertion


def test_ignored_exceptions_count_as_not_yet_and_others_propagate() -> None:
    clock = Clock()
    calls: list[object] = [OSError("refused"), ValueError("half a document"), "ok"]

    def check() -> str:
        value = calls.pop(0)
        if isinstance(value, Exception):
            raise value
        return str(value)

    def missing() -> str:
        return {"present": "x"}["missing"]

    def refused() -> str:
        raise ConnectionRefusedError("no")

    assert until("x", check, 10, ignore=(OSError, ValueError), clock=clock, sleep=clock.sleep)
    with pytest.raises(KeyError):
        until("y", missing, 10, clock=clock, sleep=clock.sleep)
    with pytest.raises(WaitTimeout, match=r"last: ConnectionRefusedError\('no'\)"):
        until(
            "z",
            refused,
            1,
            ignore=(OSError,),
            clock=clock,
            sleep=clock.sleep,
        )
