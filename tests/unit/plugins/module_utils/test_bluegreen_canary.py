"""The canary in the host's record (module_utils/bluegreen.py): its schema, its
history events, the marker line, drift against the upstream file, and the plan
for release, promote and abort while one is in progress."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from ansible.module_utils import bluegreen as core

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
COLORS = ["blue", "green"]
SERVICES = ["backend", "frontend"]
STEPS = [{"weight": 5}, {"weight": 25, "pause": True}, {"weight": 50}]


def canary(weight: int = 25, step: int = 1, paused: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "color": "green",
        "version": "v2",
        "digest": "sha256:v2",
        "weight": weight,
        "step": step,
        "steps": STEPS,
        "paused": paused,
        "since": "2025-01-02T03:04:05Z",
        "by": "ci",
        **extra,
    }


def state(with_canary: dict[str, Any] | None = None) -> dict[str, Any]:
    new = core.empty_state("archibald", COLORS)
    new["active"] = "blue"
    new["colors"]["blue"].update(version="v1", digest="sha256:v1", image_id="img-v1")
    new["colors"]["green"].update(version="v2", digest="sha256:v2", image_id="img-v2")
    new["canary"] = with_canary
    return new


def per_color(blue: bool = True, green: bool = True) -> dict[str, dict[str, Any]]:
    return {
        "blue": {"running": blue, "any_running": blue, "version": "v1", "image_id": "img-v1"},
        "green": {"running": green, "any_running": green, "version": "v2", "image_id": "img-v2"},
    }


def marker(weight: int | None) -> dict[str, Any]:
    text = core.render_marker(
        "blue",
        "v1",
        "sha256:v1",
        {"color": "green", "version": "v2", "weight": weight} if weight is not None else None,
    )
    found = core.parse_marker(text)
    assert found is not None
    return found


def test_canary_round_trips_through_the_state_file() -> None:
    text = core.render_state(state(canary()))
    loaded = core.load_state(text, "state.json", "archibald", COLORS)
    assert loaded["canary"] == canary()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"weight": 101}, "canary.weight is 101"),
        ({"weight": True}, "canary.weight is True"),
        ({"color": "red"}, "canary.color is 'red'"),
        ({"paused": "yes"}, "canary.paused is 'yes'"),
        ({"extra": 1}, "unknown key 'extra'"),
    ],
)
def test_a_broken_canary_record_is_refused(bad: dict[str, Any], message: str) -> None:
    text = json.dumps(state(canary(**bad)))
    with pytest.raises(core.StateError, match=message):
        core.load_state(text, "state.json", "archibald", COLORS)


def test_canary_action_records_steps_and_a_switch_ends_it() -> None:
    params = {
        "action": "canary",
        "canary": canary(5, 0, False),
        "event": "canary_start",
        "by": "ci",
    }
    started, event = core.apply_action(state(), params, NOW)
    assert started["canary"]["weight"] == 5 and started["active"] == "blue"
    assert event is not None and event["event"] == "canary_start" and event["weight"] == 5
    # The same step again changes nothing: a rerun writes no history.
    again, none = core.apply_action(started, params, NOW)
    assert none is None and again == started
    record = {"version": "v2", "digest": "sha256:v2"}
    switched, event = core.apply_action(
        started, {"action": "switch", "color": "green", "record": record}, NOW
    )
    assert switched["canary"] is None and switched["active"] == "green"


def test_ansible_text_values_are_given_their_types() -> None:
    text_typed = {**canary(), "weight": "25", "step": "1", "paused": "True"}
    new, _ = core.apply_action(state(), {"action": "canary", "canary": text_typed}, NOW)
    assert new["canary"]["weight"] == 25 and new["canary"]["paused"] is True


def test_ending_a_canary_keeps_the_reason_in_history() -> None:
    params = {"action": "canary", "canary": None, "event": "canary_abort", "reason": "5xx 30 %"}
    ended, event = core.apply_action(state(canary()), params, NOW)
    assert ended["canary"] is None
    assert event == {
        "at": "2025-01-02T03:04:05Z",
        "event": "canary_abort",
        "color": "green",
        "version": "v2",
        "weight": 0,
        "step": 1,
        "by": "unknown",
        "reason": "5xx 30 %",
    }


def test_the_canary_may_not_be_the_active_colour() -> None:
    with pytest.raises(core.StateError, match="is the active colour"):
        core.apply_action(state(), {"action": "canary", "canary": canary(color="blue")}, NOW)


@pytest.mark.parametrize(
    ("recorded", "weight", "green_up", "expected"),
    [
        (canary(), 25, True, []),
        (None, None, True, []),
        (canary(), 5, True, ["but the upstream file sends 5 % to green (v2)"]),
        (canary(), None, True, ["but the upstream file sends nothing to a canary"]),
        (None, 25, True, ["state.json records no canary"]),
        (canary(), 25, False, ["the canary's containers on green are not all running"]),
    ],
)
def test_canary_drift(
    recorded: dict[str, Any] | None, weight: int | None, green_up: bool, expected: list[str]
) -> None:
    found = core.canary_drift(recorded, marker(weight), per_color(green=green_up))
    assert len(found) == len(expected)
    for sentence, phrase in zip(found, expected, strict=True):
        assert phrase in sentence


@pytest.mark.parametrize("action", ["release", "rollback", "repair"])
def test_nothing_else_runs_while_a_canary_is_in_progress(action: str) -> None:
    request = {"action": action, "version": "v3", "digest": "sha256:v3"}
    plan = core.plan(state(canary()), [], per_color(), request, COLORS)
    assert plan["kind"] == "refuse"
    assert "a canary of v2 on green is in progress at 25 %" in plan["why"]
    assert "step 2 of 3, paused since" in plan["why"]
    assert "playbooks/promote.yml" in plan["why"] and "playbooks/abort.yml" in plan["why"]


def test_promote_continues_the_canary() -> None:
    plan = core.plan(state(canary()), [], per_color(), {"action": "promote"}, COLORS)
    assert plan["kind"] == "promote"
    assert (plan["from_color"], plan["to_color"], plan["to_version"]) == ("blue", "green", "v2")
    assert plan["canary"]["step"] == 1 and plan["to_image_id"] == "img-v2"


def test_promote_continues_only_the_canary_of_the_version_it_was_asked_for() -> None:
    """A promote job approved for one release must not continue another's canary."""
    asked = {"action": "promote", "version": "v2"}
    assert core.plan(state(canary()), [], per_color(), asked, COLORS)["kind"] == "promote"
    empty = {"action": "promote", "version": ""}  # promote.yml by hand, without app_version
    assert core.plan(state(canary()), [], per_color(), empty, COLORS)["kind"] == "promote"
    stale = {"action": "promote", "version": "v9"}
    refused = core.plan(state(canary()), [], per_color(), stale, COLORS)
    assert refused["kind"] == "refuse"
    assert "a canary of v2 on green is in progress" in refused["why"]
    assert "not of v9" in refused["why"] and "Nothing was changed" in refused["why"]


def test_promote_refuses_drift_and_a_version_marked_bad() -> None:
    refused = core.plan(state(canary()), ["drifted"], per_color(), {"action": "promote"}, COLORS)
    assert refused["kind"] == "refuse" and "drifted" in refused["why"]
    bad = state(canary())
    bad["bad_versions"] = {"v2": {"at": "x", "by": "y", "reason": "z"}}
    assert core.plan(bad, [], per_color(), {"action": "promote"}, COLORS)["kind"] == "refuse"


def test_abort_is_the_way_out_even_with_drift() -> None:
    plan = core.plan(state(canary()), ["drifted"], per_color(), {"action": "abort"}, COLORS)
    assert plan["kind"] == "abort" and plan["from_color"] == "blue"


def test_abort_refuses_when_the_stable_colour_is_down() -> None:
    plan = core.plan(state(canary()), [], per_color(blue=False), {"action": "abort"}, COLORS)
    assert plan["kind"] == "refuse" and "stable colour blue is not all running" in plan["why"]


@pytest.mark.parametrize("action", ["promote", "abort"])
def test_promote_or_abort_without_a_canary_changes_nothing(action: str) -> None:
    plan = core.plan(state(), [], per_color(), {"action": action}, COLORS)
    assert plan == {
        "kind": "noop",
        "why": f"no canary is in progress: nothing to {action}",
        "from_color": "blue",
        "from_version": "v1",
        "from_digest": "sha256:v1",
    }
