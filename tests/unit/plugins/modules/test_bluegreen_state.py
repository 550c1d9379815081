"""Unit tests for library/bluegreen_state.py: fenced, durable writes of the record."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bluegreen_state
import pytest
from ansible.module_utils import bluegreen as core

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
RECORD = {"version": "v1", "digest": "sha256:aa", "image_id": "img1", "config": "c1"}


def take_lock(
    directory: Path, token: str = "t1", expires_in: int = 60, now: datetime = NOW
) -> None:
    lock = {
        "owner": "run A",
        "token": token,
        "acquired_at": core.iso(now),
        "expires_at": core.iso(now + timedelta(seconds=expires_in)),
    }
    (directory / core.LOCK_FILE).write_text(json.dumps(lock))


def params(directory: Path, **extra: Any) -> dict[str, Any]:
    return {
        "dir": str(directory),
        "app": "archibald",
        "colors": ["blue", "green"],
        "action": "switch",
        "color": "blue",
        "record": RECORD,
        "event": "switch",
        "by": "ci",
        "token": "t1",
        "history_limit": 50,
        **extra,
    }


def run(directory: Path, check: bool = False, **extra: Any) -> dict[str, Any]:
    return bluegreen_state.run(params(directory, **extra), lambda: NOW, check, os.replace)


def test_switch_writes_once_then_changes_nothing(tmp_path: Path) -> None:
    take_lock(tmp_path)
    first = run(tmp_path)
    assert first["changed"] and first["event"]["to"] == "blue"
    written = json.loads((tmp_path / "state.json").read_text())
    assert written["colors"]["blue"]["digest"] == "sha256:aa"
    assert written["schema"] == core.SCHEMA_VERSION
    assert not run(tmp_path)["changed"]


def test_check_mode_writes_nothing(tmp_path: Path) -> None:
    take_lock(tmp_path)
    result = run(tmp_path, check=True)
    assert result["changed"] and result["state"]["active"] == "blue"
    assert not (tmp_path / "state.json").exists()


@pytest.mark.parametrize(
    ("lock_token", "expires_in", "message"),
    [
        pytest.param("t2", 60, "taken over", id="taken-over"),
        pytest.param("t1", -1, "expired", id="expired"),
        pytest.param(None, 0, "is gone", id="no-lock"),
    ],
)
def test_a_run_without_the_lock_cannot_write(
    tmp_path: Path, lock_token: str | None, expires_in: int, message: str
) -> None:
    if lock_token:
        take_lock(tmp_path, lock_token, expires_in)
    with pytest.raises(core.LockLost, match=message):
        run(tmp_path)
    assert not (tmp_path / "state.json").exists()


def test_writes_need_a_token(tmp_path: Path) -> None:
    with pytest.raises(core.BlueGreenError, match="needs the release lock's token"):
        run(tmp_path, token=None)


def test_read_needs_no_lock_and_reports_an_empty_record(tmp_path: Path) -> None:
    result = run(tmp_path, action="read", token=None)
    assert not result["changed"] and not result["exists"]
    assert result["state"] == core.empty_state("archibald", ["blue", "green"])


def test_a_malformed_file_is_never_overwritten(tmp_path: Path) -> None:
    take_lock(tmp_path)
    (tmp_path / "state.json").write_text("{half a file")
    with pytest.raises(core.StateError, match="not valid JSON"):
        run(tmp_path)
    assert (tmp_path / "state.json").read_text() == "{half a file"


def test_module_records_and_shows_a_diff(run_module: Any, tmp_path: Path) -> None:
    take_lock(tmp_path, now=datetime.now(UTC))
    args = params(tmp_path)
    result = run_module(bluegreen_state.main, args, diff=True)
    assert result["changed"] and result["diff"]["before"] == ""
    assert '"active": "blue"' in result["diff"]["after"]
    marked = run_module(
        bluegreen_state.main,
        {"dir": str(tmp_path), "action": "mark_bad", "version": "v9", "token": "t1"},
    )
    assert marked["changed"] and "v9" in marked["state"]["bad_versions"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"action": "switch", "color": "blue"}, "missing: record, token"),
        ({"action": "mark_bad", "token": "t"}, "missing: version"),
        ({"history_limit": 0}, "history_limit must be 1 or more"),
    ],
)
def test_module_argument_errors(
    run_module: Any, tmp_path: Path, args: dict[str, Any], message: str
) -> None:
    result = run_module(bluegreen_state.main, {"dir": str(tmp_path), **args})
    assert result["failed"] and message in result["msg"]


def test_module_names_the_lost_lock(run_module: Any, tmp_path: Path) -> None:
    take_lock(tmp_path, token="someone-else", now=datetime.now(UTC))
    result = run_module(bluegreen_state.main, params(tmp_path))
    assert result["failed"]
    assert "taken over" in result["msg"] and "stopped before its next write" in result["msg"]


# --- the deploy markers ----------------------------------------------------------


def markers_of(directory: Path) -> Path:
    (directory / "textfile").mkdir(exist_ok=True)
    return directory / "textfile" / "archibald_deploy.prom"


@pytest.mark.parametrize(
    ("extra", "active", "weights"),
    [
        ({}, "blue", ("100", "0")),
        (
            {
                "action": "canary",
                "color": None,
                "record": None,
                "event": "canary_start",
                "canary": {
                    "color": "green",
                    "version": "v2",
                    "digest": None,
                    "weight": "25",
                    "step": "0",
                    "steps": [{"weight": 25}],
                    "paused": False,
                    "since": None,
                    "by": "ci",
                },
            },
            "blue",
            ("75", "25"),
        ),
    ],
    ids=["switch", "canary step"],
)
def test_the_markers_follow_the_record_written(
    tmp_path: Path, extra: dict[str, Any], active: str, weights: tuple[str, str]
) -> None:
    take_lock(tmp_path)
    markers = markers_of(tmp_path)
    if extra:
        run(tmp_path)  # blue serves v1 first
    result = run(tmp_path, markers_file=str(markers), **extra)
    assert result["changed"] and result["markers"] == {"path": str(markers), "changed": True}
    written = markers.read_text()
    assert written == core.render_markers("archibald", ["blue", "green"], result["state"], NOW)
    assert f'archibald_deploy_info{{color="{active}",version="v1"}} 1' in written
    assert f'archibald_traffic_weight_percent{{color="blue"}} {weights[0]}' in written
    assert f'archibald_traffic_weight_percent{{color="green"}} {weights[1]}' in written
    assert oct(markers.stat().st_mode & 0o777) == "0o644"
    assert not list(markers.parent.glob(".*")), "a temporary file was left in the textfile dir"


def test_the_markers_are_rewritten_only_when_their_text_changes(tmp_path: Path) -> None:
    take_lock(tmp_path, expires_in=7200)
    markers = markers_of(tmp_path)
    run(tmp_path)  # recorded before the role wrote markers (or they were deleted)
    again = run(tmp_path, markers_file=str(markers))
    assert again["changed"] and "event" not in again and again["markers"]["changed"]
    later = bluegreen_state.run(
        params(tmp_path, markers_file=str(markers)),
        lambda: NOW + timedelta(hours=1),
        False,
        os.replace,
    )
    assert not later["changed"] and not later["markers"]["changed"]
    assert f"archibald_deploy_switch_timestamp_seconds {int(NOW.timestamp())}\n" in (
        markers.read_text()
    )


def test_check_mode_writes_no_markers(tmp_path: Path) -> None:
    take_lock(tmp_path)
    markers = markers_of(tmp_path)
    result = run(tmp_path, check=True, markers_file=str(markers))
    assert result["changed"] and result["markers"]["changed"] and not markers.exists()


def test_a_run_without_the_lock_writes_no_markers(tmp_path: Path) -> None:
    take_lock(tmp_path, token="someone-else")
    markers = markers_of(tmp_path)
    with pytest.raises(core.LockLost, match="taken over"):
        run(tmp_path, markers_file=str(markers))
    assert not markers.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"action": "read", "token": None}, "action read changes nothing"),
        ({"app": None}, "needs the app's name"),
        (
            {"markers_file": "/nonexistent/archibald_deploy.prom"},
            r"the record in .* was written, but not the deploy markers .*provision the host",
        ),
    ],
    ids=["read", "no app", "no textfile directory"],
)
def test_markers_errors_say_what_to_do(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    take_lock(tmp_path)
    with pytest.raises(core.BlueGreenError, match=message):
        run(tmp_path, **{"markers_file": str(markers_of(tmp_path)), **extra})


def test_a_move_sets_the_window_of_the_colour_left_and_cancels_the_one_that_serves(
    tmp_path: Path,
) -> None:
    take_lock(tmp_path)
    (tmp_path / "retire-blue.json").write_text(json.dumps({"deadline": 1}))
    lines: list[tuple[str, str]] = []
    result = bluegreen_state.run(
        params(
            tmp_path,
            retire={"color": "green", "window_s": 600},
            keep="blue",
            journal="archibald-release",
            event="rollback",
        ),
        lambda: NOW,
        False,
        os.replace,
        lambda ident, line: lines.append((ident, line)),
    )
    assert result["changed"] and not (tmp_path / "retire-blue.json").exists()
    written = json.loads((tmp_path / "retire-green.json").read_text())
    assert written == core.retirement("green", NOW, 600, "ci") == result["retirement"]["set"]
    assert written["deadline"] == int(NOW.timestamp()) + 600
    assert written["deadline_utc"] == "2025-01-02T03:14:05Z"
    assert result["retirement"]["cancelled"] == "blue"
    assert oct((tmp_path / "retire-green.json").stat().st_mode & 0o777) == "0o644"
    [(ident, line)] = lines
    assert ident == "archibald-release"
    assert json.loads(line) == {
        "event": "color_switch",
        "kind": "rollback",
        "from": None,
        "to": "blue",
        "version": "v1",
        "digest": "sha256:aa",
        "by": "ci",
    }


def test_no_journal_line_when_traffic_did_not_move_and_nothing_in_check_mode(
    tmp_path: Path,
) -> None:
    take_lock(tmp_path)
    lines: list[str] = []
    for check in (True, False, False):
        bluegreen_state.run(
            params(tmp_path, journal="app-release", retire={"color": "green", "window_s": 5}),
            lambda: NOW,
            check,
            os.replace,
            lambda _ident, line: lines.append(line),
        )
        # Check mode writes no retirement either.
        assert (tmp_path / "retire-green.json").exists() is not check
    assert len(lines) == 1, "the rerun moved nothing and logged nothing"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            {"retire": {"color": "red", "window_s": 5}}, "not one of", id="unknown-colour"
        ),
        pytest.param(
            {"keep": "blue", "retire": {"color": "blue", "window_s": 5}},
            "same colour",
            id="retire-and-keep-the-same",
        ),
        pytest.param({"action": "read", "keep": "blue"}, "action read", id="read"),
    ],
)
def test_retirement_errors_say_what_to_do(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    take_lock(tmp_path)
    with pytest.raises(core.BlueGreenError, match=message):
        run(tmp_path, **extra)
    assert not (tmp_path / "retire-blue.json").exists()
