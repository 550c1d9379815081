"""harness/faults.py: a freezer that fails is retried, and what was frozen is always thawed."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from harness import faults

FLAKE = "Error response from daemon: OCI runtime pause failed: unable to freeze: unknown"


class FakeDocker:
    """`docker pause/unpause` on a host whose freezer fails `failures[name]` times."""

    def __init__(self, failures: dict[str, int] | None = None) -> None:
        self.failures = dict(failures or {})
        self.paused: set[str] = set()
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append(tuple(argv))
        verb, name = argv[1], argv[2]
        if verb == "pause":
            if name in self.paused:
                return 1, f"Error response from daemon: container {name} is already paused"
            if self.failures.get(name, 0) > 0:
                self.failures[name] -= 1
                return 1, FLAKE
            self.paused.add(name)
            return 0, name
        if name not in self.paused:
            return 1, f"Error response from daemon: container {name} is not paused"
        self.paused.discard(name)
        return 0, name


def no_sleep(_: float) -> None:
    pass


def test_a_freezer_that_fails_twice_is_retried() -> None:
    docker = FakeDocker({"frontend": 2})
    assert faults.freeze(docker, ["backend", "frontend"], sleep=no_sleep) == [
        "backend",
        "frontend",
    ]
    assert docker.paused == {"backend", "frontend"}
    assert docker.calls.count(("docker", "pause", "frontend")) == 3


def test_a_freezer_that_never_settles_thaws_what_it_froze_and_says_so() -> None:
    docker = FakeDocker({"frontend": 99})
    with pytest.raises(
        RuntimeError, match=r"docker pause frontend failed 5 times .*unable to freeze"
    ):
        faults.freeze(docker, ["backend", "frontend"], sleep=no_sleep)
    assert docker.paused == set()


def test_the_block_thaws_even_when_it_fails() -> None:
    docker = FakeDocker()
    with pytest.raises(AssertionError), faults.frozen(docker, ["backend"], sleep=no_sleep):
        assert docker.paused == {"backend"}
        raise AssertionError("the test inside failed")
    assert docker.paused == set()


def test_thawing_what_is_not_paused_is_harmless() -> None:
    docker = FakeDocker()
    faults.thaw(docker, ["gone"])
    assert docker.calls == [("docker", "unpause", "gone")]
