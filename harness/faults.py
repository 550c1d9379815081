"""The one way the tests freeze an app's containers on a test host (a hung
process: it keeps its sockets and answers nothing) and always thaw them.

`docker pause` asks the cgroup freezer to stop every task; on a saturated
machine the freezer can fail to settle and runc gives up ("OCI runtime pause
failed: unable to freeze"). That is a flake of the test bed, not a verdict on
the code under test, so each container is paused on its own, retried a few
times, and whatever was paused is unpaused when the block ends, whatever
happened in it: a failed test leaves no frozen colour for the next one.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

ATTEMPTS = 5

# (argv) -> (exit status, output): a command on the test host.
Runner = Callable[[Sequence[str]], tuple[int, str]]


def docker_exec(host_container: str) -> Runner:
    """Run commands on the test host `host_container` (the Docker daemon inside it)."""

    def run(argv: Sequence[str]) -> tuple[int, str]:
        done = subprocess.run(
            ["docker", "exec", host_container, *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        return done.returncode, done.stdout + done.stderr

    return run


def freeze(
    run: Runner,
    containers: Sequence[str],
    *,
    attempts: int = ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Pause each container, retrying the freezer's failures; return those paused.

    Raises RuntimeError (after thawing those already paused) when a container
    cannot be paused in `attempts` tries, with docker's last answer.
    """
    paused: list[str] = []
    for name in containers:
        answer = ""
        for attempt in range(attempts):
            rc, answer = run(["docker", "pause", name])
            if rc == 0 or "is already paused" in answer:
                paused.append(name)
                break
            sleep(0.5 * (attempt + 1))
        else:
            thaw(run, paused)
            raise RuntimeError(
                f"docker pause {name} failed {attempts} times (the last: {answer.strip()}); "
                f"the fault was not injected and {paused or 'nothing'} was unpaused again"
            )
    return paused


def thaw(run: Runner, containers: Sequence[str]) -> None:
    """Unpause each container; one that is not paused (or is gone) is left as it is."""
    for name in containers:
        run(["docker", "unpause", name])


@contextmanager
def frozen(
    run: Runner,
    containers: Sequence[str],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[list[str]]:
    """Freeze `containers` for the block; thaw them when it ends, however it ends."""
    paused = freeze(run, containers, sleep=sleep)
    try:
        yield paused
    finally:
        thaw(run, paused)
