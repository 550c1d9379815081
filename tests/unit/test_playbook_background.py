"""harness/playbook.py's Background: the output is kept whatever its size, and
kill_group() ends the playbook with every process it forked."""

from __future__ import annotations

import os
import time

from harness import playbook


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie that nobody has reaped yet has ended too; reaped meanwhile, it is gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_kill_group_ends_the_forked_children_too() -> None:
    run = playbook.Background(["sh", "-c", "sleep 60 & echo $!; wait"], start_new_session=True)
    child = None
    for _ in range(100):
        run.output.seek(0)
        if text := run.output.read().strip():
            child = int(text)
            break
        time.sleep(0.05)
    assert child is not None and alive(child)
    run.kill_group()
    run.communicate(timeout=10)
    for _ in range(100):
        if not alive(child):
            break
        time.sleep(0.05)
    assert not alive(child), "the forked child outlived kill_group()"
    run.kill_group()  # ended already: nothing to do, no error


def test_the_output_is_kept_beyond_a_pipe_buffer() -> None:
    run = playbook.Background(["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x"])
    out, _ = run.communicate(timeout=30)
    assert len(out) == 200000
