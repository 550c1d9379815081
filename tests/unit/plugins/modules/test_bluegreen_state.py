"""Unit tests for library/bluegreen_state.py."""

from __future__ import annotations

import json
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bluegreen_state
import pytest
from bluegreen_state import StateError, apply_action, empty_state, load_state, run

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
STAMP = "2025-01-02T03:04:05Z"
COLORS = ["blue", "green"]


def state(active: str | None = "blue", blue: str | None = "v1", green: str | None = None) -> dict:
    new = empty_state("archibald", COLORS)
    new["active"] = active
    new["colors"]["blue"] = {"version": blue, "started_at": "2025-01-01T00:00:00Z"}
    new["colors"]["green"]["version"] = green
    return new


def params(action: str, **extra: Any) -> dict[str, Any]:
    return {"action": action, "colors": COLORS, "history_limit": 50, "by": "ci run 9", **extra}


@pytest.mark.parametrize(
    ("before", "args", "changes", "event"),
    [
        pytest.param(
            empty_state("archibald", COLORS),
            params("switch", color="blue", version="v1"),
            {"active": "blue", "switched_at": STAMP, "blue": ("v1", STAMP)},
            {
                "event": "switch",
                "from": None,
                "to": "blue",
                "version": "v1",
                "previous_version": None,
                "by": "ci run 9",
                "at": STAMP,
            },
            id="first-switch",
        ),
        pytest.param(
            state(green="v2"),
            params("switch", color="green", version="v2"),
            {"active": "green", "green": ("v2", None)},
            {
                "event": "switch",
                "from": "blue",
                "to": "green",
                "version": "v2",
                "previous_version": "v1",
            },
            id="switch-keeps-recorded-start",
        ),
        pytest.param(
            state(active="green", green="v2"),
            params("switch", color="blue", version="v1", event="rollback"),
            {"active": "blue", "blue": ("v1", "2025-01-01T00:00:00Z")},
            {"event": "rollback", "from": "green", "to": "blue", "previous_version": "v2"},
            id="rollback",
        ),
        pytest.param(
            state(green="v2"),
            params("record_version", color="green", version="v3"),
            {"active": "blue", "green": ("v3", STAMP)},
            None,
            id="record-version",
        ),
        pytest.param(
            state(green="v2"),
            params(
                "record_version", color="green", version="v3", started_at="2025-01-02T00:00:00Z"
            ),
            {"green": ("v3", "2025-01-02T00:00:00Z")},
            None,
            id="record-version-with-start",
        ),
        pytest.param(
            state(),
            params("mark_bad", version="v3", reason="error rate 25 %"),
            {"bad": {"v3": {"at": STAMP, "reason": "error rate 25 %", "by": "ci run 9"}}},
            {"event": "mark_bad", "version": "v3", "reason": "error rate 25 %"},
            id="mark-bad",
        ),
        pytest.param(
            dict(state(), bad_versions={"v3": {"at": "x", "reason": "y"}}),
            params("clear_bad", version="v3"),
            {"bad": {}},
            {"event": "clear_bad", "version": "v3"},
            id="clear-bad",
        ),
    ],
)
def test_apply_action_changes(
    before: dict[str, Any],
    args: dict[str, Any],
    changes: dict[str, Any],
    event: dict[str, Any] | None,
) -> None:
    snapshot = json.dumps(before, sort_keys=True)
    after, appended = apply_action(before, args, NOW)
    assert json.dumps(before, sort_keys=True) == snapshot, "the input must not be modified"
    assert after != before
    for key, value in changes.items():
        if key in COLORS:
            assert (after["colors"][key]["version"], after["colors"][key]["started_at"]) == (
                value[0],
                value[1] if value[1] is not None else before["colors"][key]["started_at"],
            )
        elif key == "bad":
            assert after["bad_versions"] == value
        else:
            assert after[key] == value
    if event is None:
        assert appended is None and after["history"] == before["history"]
    else:
        assert appended is not None
        assert {k: appended[k] for k in event} == event
        assert after["history"][-1] == appended


@pytest.mark.parametrize(
    ("before", "args"),
    [
        pytest.param(state(), params("switch", color="blue", version="v1"), id="switch-same"),
        pytest.param(state(), params("record_version", color="blue", version="v1"), id="record"),
        pytest.param(state(), params("clear_bad", version="v9"), id="clear-absent"),
        pytest.param(
            dict(state(), bad_versions={"v3": {"at": "x", "reason": "slow"}}),
            params("mark_bad", version="v3", reason="slow"),
            id="mark-bad-again",
        ),
        pytest.param(state(), params("read"), id="read"),
    ],
)
def test_apply_action_idempotent(before: dict[str, Any], args: dict[str, Any]) -> None:
    after, event = apply_action(before, args, NOW)
    assert after == before
    assert event is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            params("switch", color="red", version="v2"),
            r"color 'red' is not one of",
            id="unknown-colour",
        ),
        pytest.param(
            params("switch", color="green"), r"action switch needs version", id="switch-no-version"
        ),
        pytest.param(
            params("record_version", color="blue", version="v2"),
            r"colour blue is active and serves v1; record v2 on it with action switch",
            id="record-on-active",
        ),
        pytest.param(params("mark_bad"), r"action mark_bad needs version", id="mark-no-version"),
    ],
)
def test_apply_action_errors(args: dict[str, Any], message: str) -> None:
    with pytest.raises(StateError, match=message):
        apply_action(state(), args, NOW)


def test_history_is_capped() -> None:
    current = state()
    current["history"] = [{"event": "switch", "n": n} for n in range(5)]
    after, event = apply_action(current, params("mark_bad", version="v9", history_limit=3), NOW)
    assert len(after["history"]) == 3
    assert after["history"][:2] == [{"event": "switch", "n": 3}, {"event": "switch", "n": 4}]
    assert after["history"][-1] == event


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "{not json",
            r"state file /s.json is not valid JSON \(.*\); traffic was not "
            r"touched",
            id="not-json",
        ),
        pytest.param("[]", r"not a valid blue/green state: the top level is list", id="list"),
        pytest.param(
            '{"schema": 2, "colors": {"blue": {}, "green": {}}}',
            r"schema is 2, expected 1; traffic was not touched",
            id="schema",
        ),
        pytest.param(
            '{"schema": 1, "active": "red", "colors": {"blue": {}, "green": {}}}',
            r"active is 'red', expected one of blue, green or null",
            id="active",
        ),
        pytest.param(
            '{"schema": 1, "colors": {"blue": {}}}', r"colors.green is None", id="missing-colour"
        ),
        pytest.param(
            '{"schema": 1, "colors": {"blue": {}, "green": {}, "red": {}}}',
            r"unknown colour 'red'",
            id="extra-colour",
        ),
        pytest.param(
            '{"schema": 1, "app": "other", "colors": {"blue": {}, "green": {}}}',
            r"belongs to app 'other', not 'archibald'",
            id="other-app",
        ),
    ],
)
def test_load_state_errors(text: str, message: str) -> None:
    with pytest.raises(StateError, match=message):
        load_state(text, "/s.json", "archibald", COLORS)


@pytest.mark.parametrize("text", [None, "", "\n"])
def test_load_state_missing_or_empty_is_first_release(text: str | None) -> None:
    assert load_state(text, "/s.json", "archibald", COLORS) == empty_state("archibald", COLORS)


def test_load_state_fills_optional_keys() -> None:
    loaded = load_state('{"schema": 1, "colors": {"blue": {}, "green": {}}}', "/s", "a", COLORS)
    assert loaded["active"] is None
    assert loaded["app"] == "a"
    assert loaded["bad_versions"] == {} and loaded["history"] == []
    assert loaded["colors"]["blue"] == {"version": None, "started_at": None}


def test_run_writes_atomically_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    args = {"path": str(path), "app": "archibald", **params("switch", color="blue", version="v1")}
    first = run(args, NOW, check_mode=False)
    assert first["changed"] and not first["exists"]
    assert first["diff"]["before"] == ""
    on_disk = json.loads(path.read_text())
    assert on_disk == first["state"]
    assert on_disk["active"] == "blue" and on_disk["app"] == "archibald"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644

    second = run(args, NOW, check_mode=False)
    assert not second["changed"] and second["exists"]
    assert second["diff"]["before"] == second["diff"]["after"]
    assert os.listdir(tmp_path) == ["state.json"]


def test_run_check_mode_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(state()))
    before = path.read_text()
    result = run(
        {"path": str(path), **params("switch", color="green", version="v2")}, NOW, check_mode=True
    )
    assert result["changed"]
    assert result["state"]["active"] == "green"
    assert '"active": "blue"' in result["diff"]["before"]
    assert '"active": "green"' in result["diff"]["after"]
    assert path.read_text() == before


def test_run_refuses_to_overwrite_malformed_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("{truncated")
    with pytest.raises(StateError, match=rf"state file {path} is not valid JSON"):
        run({"path": str(path), **params("switch", color="blue", version="v1")}, NOW, False)
    assert path.read_text() == "{truncated"


def test_run_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "state.json"
    with pytest.raises(StateError, match=r"directory .*nope for state file .* does not exist"):
        run({"path": str(path), **params("mark_bad", version="v1")}, NOW, False)


def test_module_switch_diff_and_read(run_module: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "state.json")
    common = {"path": path, "app": "archibald"}
    recorded = run_module(
        bluegreen_state.main,
        {**common, "action": "record_version", "color": "blue", "version": "v1"},
    )
    assert recorded["changed"] and "diff" not in recorded
    switched = run_module(
        bluegreen_state.main,
        {**common, "action": "switch", "to": "blue", "version": "v1", "by": "alice"},
        diff=True,
    )
    assert switched["changed"]
    assert switched["event"]["by"] == "alice"
    assert '"active": "blue"' in switched["diff"]["after"]
    read = run_module(bluegreen_state.main, {"path": path})
    assert not read["changed"]
    assert read["state"]["active"] == "blue"
    assert read["state"]["colors"]["blue"]["version"] == "v1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            {"action": "switch", "color": "blue"},
            r"action is switch but .*version",
            id="required-if",
        ),
        pytest.param(
            {"action": "read", "history_limit": 0},
            r"history_limit must be 1 or more",
            id="history-limit",
        ),
    ],
)
def test_module_argument_errors(
    run_module: Any, tmp_path: Path, args: dict[str, Any], message: str
) -> None:
    result = run_module(bluegreen_state.main, {"path": str(tmp_path / "s.json"), **args})
    assert result["failed"]
    assert re.search(message, result["msg"]), result["msg"]


def test_module_malformed_file_message(run_module: Any, tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"schema": 1, "active": "purple", "colors": {"blue": {}, "green": {}}}')
    result = run_module(
        bluegreen_state.main, {"path": str(path), "action": "switch", "to": "blue", "version": "v1"}
    )
    assert result["failed"]
    assert str(path) in result["msg"]
    assert "active is 'purple'" in result["msg"]
    assert "traffic was not touched" in result["msg"]
