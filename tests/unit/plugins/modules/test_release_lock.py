"""Unit tests for library/release_lock.py."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import release_lock
from release_lock import LockError, parse_lock, plan_acquire, plan_release, run

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
PATH = "/var/lib/archibald/app/release.lock"


def held(owner: str = "alice@laptop", expires_in: int = 600) -> dict[str, Any]:
    return {
        "owner": owner,
        "acquired_at": "2025-01-01T11:55:00Z",
        "expires_at": release_lock.iso(NOW + timedelta(seconds=expires_in)),
    }


@pytest.mark.parametrize(
    ("current", "owner", "force", "action", "took_over"),
    [
        pytest.param(None, "ci run 7", False, "created", None, id="free"),
        pytest.param(held("ci run 7"), "ci run 7", False, "refreshed", None, id="same-owner"),
        pytest.param(
            held(expires_in=-1), "ci run 7", False, "took_over", "alice@laptop", id="expired"
        ),
        pytest.param(held(), "ci run 7", True, "took_over", "alice@laptop", id="forced"),
        pytest.param(
            {"unreadable": "not JSON"}, "ci run 7", True, "took_over", None, id="unreadable-forced"
        ),
    ],
)
def test_plan_acquire(
    current: dict[str, Any] | None, owner: str, force: bool, action: str, took_over: str | None
) -> None:
    outcome = plan_acquire(PATH, current, owner, 900, force, NOW)
    assert outcome.action == action
    assert outcome.changed and outcome.held
    assert outcome.lock is not None
    assert outcome.lock["owner"] == owner
    assert outcome.lock["expires_at"] == "2025-01-01T12:15:00Z"
    if took_over:
        assert outcome.took_over_from is not None
        assert outcome.took_over_from["owner"] == took_over


def test_refresh_keeps_acquired_at() -> None:
    outcome = plan_acquire(PATH, held("ci run 7"), "ci run 7", 900, False, NOW)
    assert outcome.lock is not None
    assert outcome.lock["acquired_at"] == "2025-01-01T11:55:00Z"


@pytest.mark.parametrize(
    ("current", "message"),
    [
        pytest.param(
            held(),
            r"^release lock /var/lib/archibald/app/release.lock is held by alice@laptop since "
            r"2025-01-01T11:55:00Z \(expires 2025-01-01T12:10:00Z\); wait for .* if the holder "
            r"is gone, remove it \(rm /var/lib/archibald/app/release.lock, or .*force: true\)",
            id="held-by-other",
        ),
        pytest.param(
            {"unreadable": "not JSON: Expecting value"},
            r"exists but cannot be read \(not JSON: Expecting value\)",
            id="unreadable",
        ),
    ],
)
def test_plan_acquire_refused(current: dict[str, Any], message: str) -> None:
    with pytest.raises(LockError, match=message):
        plan_acquire(PATH, current, "ci run 7", 900, False, NOW)


@pytest.mark.parametrize(
    ("current", "force", "action"),
    [
        pytest.param(None, False, "none", id="no-lock"),
        pytest.param(held("ci run 7"), False, "released", id="mine"),
        pytest.param(held(expires_in=-5), False, "released", id="expired-other"),
        pytest.param(held(), True, "released", id="forced-other"),
    ],
)
def test_plan_release(current: dict[str, Any] | None, force: bool, action: str) -> None:
    outcome = plan_release(PATH, current, "ci run 7", force, NOW)
    assert outcome.action == action
    assert outcome.changed is (action != "none")
    assert not outcome.held


def test_plan_release_refused() -> None:
    with pytest.raises(LockError, match=r"cannot release: .* held by alice@laptop .*not by ci"):
        plan_release(PATH, held(), "ci run 7", False, NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", None, id="empty"),
        pytest.param("{oops", "not JSON", id="not-json"),
        pytest.param('{"acquired_at": "x"}', "no owner", id="no-owner"),
        pytest.param('{"owner": "a", "expires_at": "soon"}', "no valid expires_at", id="bad-time"),
    ],
)
def test_parse_lock(text: str, expected: str | None) -> None:
    parsed = parse_lock(text)
    if expected is None:
        assert parsed is None
    else:
        assert parsed is not None and expected in parsed["unreadable"]


def test_lifecycle_on_disk(tmp_path: Path) -> None:
    path = str(tmp_path / "release.lock")
    first = run(path, "ci run 7", "present", 900, False, False, NOW)
    assert first.action == "created"
    content = json.loads(Path(path).read_text())
    assert content == {
        "owner": "ci run 7",
        "acquired_at": "2025-01-01T12:00:00Z",
        "expires_at": "2025-01-01T12:15:00Z",
    }
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644

    with pytest.raises(LockError, match=r"held by ci run 7"):
        run(path, "bob@desk", "present", 900, False, False, NOW + timedelta(seconds=60))
    with pytest.raises(LockError, match=r"cannot release.*held by ci run 7"):
        run(path, "bob@desk", "absent", 900, False, False, NOW)

    again = run(path, "ci run 7", "present", 900, False, False, NOW + timedelta(seconds=60))
    assert again.action == "refreshed"
    assert json.loads(Path(path).read_text())["expires_at"] == "2025-01-01T12:16:00Z"

    later = NOW + timedelta(hours=1)
    taken = run(path, "bob@desk", "present", 900, False, False, later)
    assert taken.action == "took_over"
    assert taken.took_over_from is not None and taken.took_over_from["owner"] == "ci run 7"

    released = run(path, "bob@desk", "absent", 900, False, False, later)
    assert released.action == "released"
    assert not Path(path).exists()
    assert run(path, "bob@desk", "absent", 900, False, False, later).action == "none"
    assert sorted(os.listdir(tmp_path)) == []  # no temporary files left behind


def test_check_mode_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "release.lock"
    outcome = run(str(path), "ci run 7", "present", 900, False, True, NOW)
    assert outcome.action == "created" and outcome.changed
    assert not path.exists()
    path.write_text(json.dumps(held("ci run 7")))
    assert run(str(path), "ci run 7", "absent", 900, False, True, NOW).action == "released"
    assert path.exists()


@pytest.mark.parametrize(
    ("owner", "ttl", "subdir", "message"),
    [
        pytest.param(" ", 900, "", r"owner must name who takes the lock", id="blank-owner"),
        pytest.param("ci", 0, "", r"ttl must be at least 1 second, got 0", id="ttl"),
        pytest.param(
            "ci",
            900,
            "missing",
            r"directory .*missing for release lock .* does not "
            r"exist",
            id="no-directory",
        ),
    ],
)
def test_run_errors(tmp_path: Path, owner: str, ttl: int, subdir: str, message: str) -> None:
    path = tmp_path / subdir / "release.lock"
    with pytest.raises(LockError, match=message):
        run(str(path), owner, "present", ttl, False, False, NOW)


def test_module_acquire_and_refuse(run_module: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "release.lock")
    first = run_module(release_lock.main, {"path": path, "owner": "ci run 7"})
    assert first["changed"] and first["action"] == "created" and first["held"]
    assert first["lock"]["owner"] == "ci run 7"
    assert first["lock_path"] == path
    assert "owner" not in first, "a 'path' key would make Ansible add the file's owner"

    refused = run_module(release_lock.main, {"path": path, "owner": "bob@desk"})
    assert refused["failed"]
    assert refused["msg"].startswith(f"release lock {path} is held by ci run 7 since ")

    checked = run_module(
        release_lock.main, {"path": path, "owner": "ci run 7", "state": "absent"}, check=True
    )
    assert checked["changed"] and Path(path).exists()

    released = run_module(release_lock.main, {"path": path, "owner": "ci run 7", "state": "absent"})
    assert released["changed"] and released["action"] == "released"
    assert not Path(path).exists()


def _contend(path: str, owner: str, start: Any, results: Any) -> None:
    start.wait()
    try:
        run(path, owner, "present", 900, False, False, datetime.now(UTC))
        results.put(owner)
    except LockError:
        results.put(None)


def test_only_one_of_many_simultaneous_acquires_wins(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    path = str(tmp_path / "release.lock")
    start = context.Event()
    results = context.Queue()
    workers = [
        context.Process(target=_contend, args=(path, f"runner {n}", start, results))
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
    assert json.loads(Path(path).read_text())["owner"] == winners[0]
