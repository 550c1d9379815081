"""Unit tests for library/release_lock.py: take, refresh, wait, give back."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import release_lock
from ansible.module_utils import bluegreen as core

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def params(directory: Path, **extra: Any) -> dict[str, Any]:
    return {
        "dir": str(directory),
        "owner": "run A",
        "state": "present",
        "token": None,
        "ttl": 300,
        "wait": 0,
        "force": False,
        "take_over_from": "",
        "report_held": False,
        **extra,
    }


def take(directory: Path, **extra: Any) -> dict[str, Any]:
    return release_lock.run(params(directory, **extra), False, lambda: NOW, sleep=lambda s: None)


def on_disk(directory: Path) -> dict[str, Any]:
    return json.loads((directory / core.LOCK_FILE).read_text())


def test_take_refresh_and_give_back(tmp_path: Path) -> None:
    taken = take(tmp_path)
    assert taken["action"] == "created" and on_disk(tmp_path)["token"] == taken["token"]
    later = NOW + timedelta(seconds=100)
    refreshed = release_lock.run(
        params(tmp_path, token=taken["token"], owner=None), False, lambda: later
    )
    assert refreshed["action"] == "refreshed"
    assert on_disk(tmp_path)["expires_at"] == core.iso(later + timedelta(seconds=300))
    given = take(tmp_path, state="absent", token=taken["token"])
    assert given["action"] == "released" and not (tmp_path / core.LOCK_FILE).exists()


def test_a_held_lock_is_waited_for_then_refused(tmp_path: Path) -> None:
    take(tmp_path, owner="run B")
    slept: list[float] = []
    with pytest.raises(core.LockError, match="held by run B"):
        release_lock.run(params(tmp_path, wait=3), False, lambda: NOW, sleep=slept.append)
    assert slept == [1.0, 1.0, 1.0]


def test_a_ci_runs_clean_up_takes_over_its_own_cancelled_runs_lock(tmp_path: Path) -> None:
    """What scripts/ci-undo.sh does after a cancel: the run's own lock at once, with no wait."""
    cancelled = take(tmp_path, owner="gha (CI run 7) from r, promote 1")
    slept: list[float] = []
    result = release_lock.run(
        params(
            tmp_path,
            owner="gha (CI run 7) from r, abort 2",
            take_over_from="(CI run 7)",
            wait=120,
            report_held=True,
        ),
        False,
        lambda: NOW,
        sleep=slept.append,
    )
    assert result["action"] == "took_over" and slept == []
    assert result["took_over_from"] == cancelled["lock"]
    assert on_disk(tmp_path)["taken"]["how"] == "own run"
    # Another run's live lock is waited for, as always.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    take(theirs, owner="gha (CI run 8) from r, promote 3")
    with pytest.raises(core.LockError, match=r"held by gha \(CI run 8\)"):
        take(theirs, take_over_from="(CI run 7)")


def test_a_held_lock_is_reported_at_once_without_waiting(tmp_path: Path) -> None:
    """report_held: the first attempt of a run names the holder before anyone waits."""
    theirs = take(tmp_path, owner="run B")
    slept: list[float] = []
    later = NOW + timedelta(seconds=30)
    result = release_lock.run(
        params(tmp_path, wait=120, report_held=True), False, lambda: later, sleep=slept.append
    )
    assert slept == [] and result["waited"] == 0.0
    assert result["action"] == "held" and result["token"] is None
    assert result["lock"] == on_disk(tmp_path) == theirs["lock"]
    held = " ".join(result["held"].split())
    assert "held by run B since 2025-01-01T12:00:00Z" in held
    assert "last renewed 2025-01-01T12:00:00Z (30 s ago)" in held
    assert "expires 2025-01-01T12:05:00Z (in 270 s)" in held
    assert "bluegreen_lock_force=true" in held


def test_report_held_takes_a_free_lock(tmp_path: Path) -> None:
    result = take(tmp_path, report_held=True)
    assert result["action"] == "created" and result["held"] is None
    assert on_disk(tmp_path)["token"] == result["token"]


def test_module_reports_a_held_lock_unchanged(run_module: Any, tmp_path: Path) -> None:
    run_module(release_lock.main, {"dir": str(tmp_path), "owner": "run A"})
    held = run_module(
        release_lock.main, {"dir": str(tmp_path), "owner": "run B", "report_held": True}
    )
    assert not held.get("failed") and not held["changed"]
    assert held["action"] == "held" and "held by run A" in held["held"]


def test_waiting_ends_when_the_holder_gives_the_lock_back(tmp_path: Path) -> None:
    other = take(tmp_path, owner="retire timer")

    def holder_finishes(seconds: float) -> None:
        take(tmp_path, state="absent", token=other["token"])

    result = release_lock.run(params(tmp_path, wait=60), False, lambda: NOW, sleep=holder_finishes)
    assert result["action"] == "created" and result["waited"] == 1.0


def test_refresh_after_a_takeover_fails_and_leaves_the_new_lock(tmp_path: Path) -> None:
    mine = take(tmp_path, ttl=10)
    later = NOW + timedelta(seconds=20)
    theirs = release_lock.run(params(tmp_path, owner="run B"), False, lambda: later)
    assert theirs["action"] == "took_over" and theirs["took_over_from"]["owner"] == "run A"
    with pytest.raises(core.LockLost, match="taken over"):
        release_lock.run(params(tmp_path, token=mine["token"], wait=30), False, lambda: later)
    gone = release_lock.run(
        params(tmp_path, state="absent", token=mine["token"]), False, lambda: later
    )
    assert gone["action"] == "none" and on_disk(tmp_path)["token"] == theirs["token"]


def test_check_mode_writes_nothing(tmp_path: Path) -> None:
    result = release_lock.run(params(tmp_path), True, lambda: NOW)
    assert result["action"] == "created" and not (tmp_path / core.LOCK_FILE).exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"owner": " "}, "owner must name who takes the lock"),
        ({"ttl": 0}, "ttl must be at least 1 second"),
        ({"dir": "/nonexistent/dir"}, "does not exist"),
    ],
)
def test_run_errors(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(core.BlueGreenError, match=message):
        take(tmp_path, **extra)


def test_module_takes_and_refuses(run_module: Any, tmp_path: Path) -> None:
    first = run_module(release_lock.main, {"dir": str(tmp_path), "owner": "run A"})
    assert not first["changed"] and first["action"] == "created"
    second = run_module(release_lock.main, {"dir": str(tmp_path), "owner": "run B"})
    assert second["failed"] and "held by run A" in second["msg"]


def _contend(directory: str, owner: str, start: Any, results: Any) -> None:
    start.wait()
    try:
        release_lock.run(
            {
                "dir": directory,
                "owner": owner,
                "state": "present",
                "token": None,
                "ttl": 300,
                "wait": 0,
                "force": False,
            },
            False,
            lambda: datetime.now(UTC),
        )
        results.put(owner)
    except core.LockError:
        results.put(None)


def test_only_one_of_many_simultaneous_takers_wins(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    start = context.Event()
    results = context.Queue()
    workers = [
        context.Process(target=_contend, args=(str(tmp_path), f"runner {n}", start, results))
        for n in range(8)
    ]
    for worker in workers:
        worker.start()
    start.set()
    outcomes = [results.get(timeout=10) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1
    assert on_disk(tmp_path)["owner"] == winners[0]
