"""Unit tests for filter_plugins/bluegreen.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import bluegreen
import pytest
import yaml
from ansible.errors import AnsibleFilterError
from bluegreen import FilterModule, bluegreen_plan, bluegreen_rollback_plan


def make_state(
    active: str | None = "blue",
    blue: str | None = "v1",
    green: str | None = None,
    bad: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "schema": 1,
        "app": "archibald",
        "active": active,
        "colors": {
            "blue": {"version": blue, "started_at": "2025-01-01T00:00:00Z" if blue else None},
            "green": {"version": green, "started_at": "2025-01-02T00:00:00Z" if green else None},
        },
        "switched_at": "2025-01-01T00:01:00Z" if active else None,
        "bad_versions": bad or {},
        "history": [],
    }


BAD_V3 = {"v3": {"at": "2025-01-03T00:00:00Z", "reason": "error rate 25 %"}}


@pytest.mark.parametrize(
    ("state", "version", "kwargs", "expected"),
    [
        pytest.param(
            None,
            "v1",
            {},
            {"first_release": True, "active": None, "target": "blue", "noop": False},
            id="none-is-first-release",
        ),
        pytest.param("", "v1", {}, {"first_release": True, "target": "blue"}, id="empty-string"),
        pytest.param("  \n", "v1", {}, {"first_release": True}, id="blank-file"),
        pytest.param({}, "v1", {}, {"first_release": True, "target": "blue"}, id="empty-dict"),
        pytest.param(
            make_state(active=None, blue=None),
            "v1",
            {},
            {"first_release": True, "target": "blue", "target_current_version": None},
            id="state-without-active",
        ),
        pytest.param(
            make_state(),
            "v2",
            {},
            {
                "first_release": False,
                "active": "blue",
                "target": "green",
                "previous_color": "blue",
                "previous_version": "v1",
                "noop": False,
                "target_current_version": None,
                "forced_bad": False,
            },
            id="blue-active-targets-green",
        ),
        pytest.param(
            make_state(active="green", blue="v1", green="v2"),
            "v3",
            {},
            {"target": "blue", "previous_version": "v2", "target_current_version": "v1"},
            id="green-active-targets-blue",
        ),
        pytest.param(
            make_state(), "v1", {}, {"noop": True, "target": "green"}, id="same-version-is-noop"
        ),
        pytest.param(
            json.dumps(make_state()),
            "v2",
            {},
            {"target": "green", "previous_version": "v1"},
            id="json-string",
        ),
        pytest.param(
            make_state(bad=BAD_V3),
            "v3",
            {"force": True},
            {"target": "green", "forced_bad": True},
            id="bad-version-forced",
        ),
        pytest.param(
            make_state(bad=BAD_V3),
            "v3",
            {"force": "true"},
            {"forced_bad": True},
            id="force-from-extra-vars-string",
        ),
        pytest.param(
            make_state(bad=BAD_V3),
            "v2",
            {},
            {"forced_bad": False, "target": "green"},
            id="other-version-than-bad",
        ),
        pytest.param(
            {
                "schema": 1,
                "active": "red",
                "colors": {"red": {"version": "v1"}, "black": {"version": None}},
            },
            "v2",
            {"colors": ["red", "black"]},
            {"target": "black", "previous_version": "v1"},
            id="custom-colours",
        ),
        pytest.param(
            None, "v1", {"colors": ["green", "blue"]}, {"target": "green"}, id="first-colour-wins"
        ),
    ],
)
def test_plan(state: Any, version: str, kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    plan = bluegreen_plan(state, version, **kwargs)
    assert {key: plan[key] for key in expected} == expected
    assert plan["version"] == version


@pytest.mark.parametrize(
    ("state", "version", "kwargs", "message"),
    [
        pytest.param(
            make_state(bad=BAD_V3),
            "v3",
            {},
            r"version v3 is listed in bad_versions.*"
            r"error rate 25 %.*force=true \(-e app_force=true\)",
            id="bad-version",
        ),
        pytest.param(make_state(), "", {}, r"non-empty string.*empty string", id="empty-version"),
        pytest.param(make_state(), 2, {}, r"got 2 of type int", id="int-version"),
        pytest.param(make_state(), None, {}, r"got None of type NoneType", id="none-version"),
        pytest.param([], "v1", {}, r"state must be a dict .* got list", id="state-list"),
        pytest.param("{nope", "v1", {}, r"state is not valid JSON", id="bad-json"),
        pytest.param(
            dict(make_state(), schema=2), "v1", {}, r"schema 2, expected schema 1", id="schema"
        ),
        pytest.param(
            {k: v for k, v in make_state().items() if k != "schema"},
            "v1",
            {},
            r"schema None, expected schema 1",
            id="schema-missing",
        ),
        pytest.param(
            dict(make_state(), active="red"),
            "v1",
            {},
            r"state.active is 'red', expected one of blue, green or null",
            id="active-unknown",
        ),
        pytest.param(
            dict(make_state(), colors={"blue": {"version": "v1"}}),
            "v1",
            {},
            r"state.colors.green is missing",
            id="colour-entry-missing",
        ),
        pytest.param(
            dict(make_state(), colors=["blue", "green"]),
            "v1",
            {},
            r"state.colors must be a dict",
            id="colors-not-dict",
        ),
        pytest.param(
            dict(
                make_state(),
                colors={"blue": {"version": "v1"}, "green": {"version": None}, "red": {}},
            ),
            "v1",
            {},
            r"unknown colour\(s\) red; expected only blue, green",
            id="extra-colour",
        ),
        pytest.param(
            dict(make_state(), colors={"blue": {"version": 1}, "green": {"version": None}}),
            "v1",
            {},
            r"state.colors.blue.version must be a string or null, got 1",
            id="version-not-string",
        ),
        pytest.param(
            dict(make_state(), bad_versions=["v3"]),
            "v1",
            {},
            r"bad_versions must be a dict",
            id="bad-versions-list",
        ),
        pytest.param(
            make_state(), "v1", {"colors": ["blue"]}, r"two distinct.*\['blue'\]", id="one-colour"
        ),
        pytest.param(
            make_state(),
            "v1",
            {"colors": ["blue", "blue"]},
            r"two distinct",
            id="same-colours",
        ),
        pytest.param(make_state(), "v1", {"colors": "blue"}, r"must be a list", id="colors-str"),
        pytest.param(
            make_state(),
            "v1",
            {"force": "maybe"},
            r"force must be a boolean.*'maybe'",
            id="force-not-bool",
        ),
    ],
)
def test_plan_errors(state: Any, version: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        bluegreen_plan(state, version, **kwargs)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param(
            make_state(active="green", blue="v1", green="v2"),
            {"from": "green", "to": "blue", "version": "v1", "from_version": "v2"},
            id="green-back-to-blue",
        ),
        pytest.param(
            json.dumps(make_state(active="blue", blue="v3", green="v2")),
            {"from": "blue", "to": "green", "version": "v2", "version_is_bad": False},
            id="json-string",
        ),
        pytest.param(
            make_state(active="blue", blue="v3", green="v2", bad={"v2": {"reason": "x"}}),
            {"to": "green", "version": "v2", "version_is_bad": True},
            id="target-version-is-bad",
        ),
    ],
)
def test_rollback_plan(state: Any, expected: dict[str, Any]) -> None:
    plan = bluegreen_rollback_plan(state)
    assert {key: plan[key] for key in expected} == expected


@pytest.mark.parametrize(
    ("state", "message"),
    [
        pytest.param(None, r"nothing to roll back to: the state records no release", id="none"),
        pytest.param(
            make_state(active=None), r"nothing to roll back to.*active is null", id="no-active"
        ),
        pytest.param(
            make_state(active="blue", blue="v1", green=None),
            r"nothing to roll back to: colour green has no recorded version",
            id="other-colour-empty",
        ),
        pytest.param({"schema": 3}, r"schema 3, expected schema 1", id="malformed"),
    ],
)
def test_rollback_plan_errors(state: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        bluegreen_rollback_plan(state)


@pytest.mark.parametrize("name", ["bluegreen_plan", "bluegreen_rollback_plan"])
def test_filter_registered_and_documented(name: str) -> None:
    assert FilterModule().filters()[name] is getattr(bluegreen, name)
    doc_file = Path(bluegreen.__file__).with_name(f"{name}.yml")
    doc = yaml.safe_load(doc_file.read_text(encoding="utf-8"))
    assert doc["DOCUMENTATION"]["name"] == name
    assert doc["EXAMPLES"].strip()
    assert "_value" in doc["RETURN"]
