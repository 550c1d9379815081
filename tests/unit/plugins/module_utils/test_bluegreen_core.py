"""Unit tests for module_utils/bluegreen.py: the record, the lock, drift and the plan."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from ansible.module_utils import bluegreen as core

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
STAMP = "2025-01-02T03:04:05Z"
COLORS = ["blue", "green"]
SERVICES = ["backend", "frontend"]
SPEC = {
    "services": {"backend": {"command": ["serve"]}},
    "env": {},
    "listen": "127.0.0.1",
    "volume": "archibald-data",
    "drain": 60,
    "grace": 75,
    "restart": "unless-stopped",
}


def state(
    active: str | None = "blue",
    blue: str | None = "v1",
    green: str | None = None,
    bad: tuple[str, ...] = (),
) -> dict[str, Any]:
    new = core.empty_state("archibald", COLORS)
    new["active"] = active
    for color, version in (("blue", blue), ("green", green)):
        if version:
            new["colors"][color].update(
                version=version, digest=f"sha256:{version}", image_id=f"img-{version}", config="c1"
            )
    new["bad_versions"] = {v: {"at": STAMP, "reason": "r", "by": "ci"} for v in bad}
    return new


def container(color: str, service: str, version: str, running: bool = True, **extra: Any) -> dict:
    return {
        "Name": f"/archibald-{service}-{color}",
        "Image": extra.get("image_id", f"img-{version}"),
        "RestartCount": extra.get("restarts", 0),
        "State": {"Running": running, "StartedAt": STAMP},
        "Config": {
            "Image": f"registry/app@sha256:{version}",
            "Labels": {
                "org.archibald.color": color,
                "org.archibald.service": service,
                "org.archibald.version": version,
                "org.archibald.config": extra.get("config", "c1"),
                "org.archibald.digest": f"sha256:{version}",
            },
        },
    }


def colors(*specs: tuple[str, str, bool]) -> dict[str, dict[str, Any]]:
    found = [
        core.summarize_container(container(c, s, v, running))
        for c, v, running in specs
        for s in SERVICES
    ]
    return core.colors_of(found, COLORS, SERVICES)


def edge(color: str | None, version: str | None = None) -> dict[str, Any]:
    if color is None:
        return {"status": 502, "color": None, "version": None, "error": "HTTP 502"}
    return {"status": 200, "color": color, "version": version, "error": None}


# --- the record ------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "\n"])
def test_missing_or_empty_file_is_an_empty_record(text: str | None) -> None:
    assert core.load_state(text, "/s", "archibald", COLORS) == core.empty_state("archibald", COLORS)


def test_schema_1_is_upgraded_on_load() -> None:
    old = {
        "schema": 1,
        "app": "archibald",
        "active": "blue",
        "colors": {"blue": {"version": "v1", "started_at": STAMP}, "green": {"version": None}},
        "bad_versions": {"v0": {"reason": "x"}},
        "history": [{"event": "switch"}],
    }
    loaded = core.load_state(json.dumps(old), "/s", "archibald", COLORS)
    assert loaded["schema"] == core.SCHEMA_VERSION
    assert loaded["colors"]["blue"] == {**core.empty_color(), "version": "v1", "started_at": STAMP}
    assert loaded["bad_versions"] == {"v0": {"reason": "x"}}
    assert loaded["history"] == [{"event": "switch"}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", r"not valid JSON .*repair\.yml"),
        ("[]", "the top level is list"),
        ('{"schema": 9, "colors": {"blue": {}, "green": {}}}', "schema is 9"),
        ('{"schema": 2, "colors": {"blue": {}, "red": {}}}', "unknown colour 'red'"),
        ('{"schema": 2, "active": "red", "colors": {"blue": {}, "green": {}}}', "active is 'red'"),
        ('{"schema": 2, "colors": {"blue": {"digest": 5}, "green": {}}}', r"blue\.digest is 5"),
        ('{"schema": 2, "app": "other", "colors": {"blue": {}, "green": {}}}', "belongs to app"),
        ('{"schema": 2, "colors": {"blue": {"spec": "x"}, "green": {}}}', r"blue\.spec is 'x'"),
        ('{"schema": 2, "colors": {"blue": {"spec": {"env": {}}}, "green": {}}}', r"spec lacks"),
    ],
)
def test_invalid_records_are_refused(text: str, message: str) -> None:
    with pytest.raises(core.StateError, match=message):
        core.load_state(text, "/s", "archibald", COLORS)


def test_a_spec_with_or_without_its_later_keys_is_kept() -> None:
    """hardening came after the first specs: a record with it keeps it, and one
    from before it still loads (that colour starts again as it ran)."""
    hardened = {**SPEC, "hardening": {"read_only": True, "memory": "512m", "cap_add": []}}
    for spec in (SPEC, hardened):
        after, _ = core.apply_action(
            state(),
            {
                "colors": COLORS,
                "action": "switch",
                "color": "green",
                "record": {"version": "v2", "spec": spec},
            },
            NOW,
        )
        text = core.render_state(after)
        assert core.load_state(text, "/s", "archibald", COLORS)["colors"]["green"]["spec"] == spec
    assert core.check_spec({**SPEC, "hardenin": {}}, "s") == [
        f"s has unknown keys ['hardenin'], expected {[*core.SPEC_KEYS, *core.SPEC_LATER_KEYS]}"
    ]


def test_switch_records_what_runs_and_appends_history() -> None:
    record = {"version": "v2", "digest": "sha256:v2", "image_id": "img-v2", "config": "c1"}
    params = {"action": "switch", "color": "green", "record": record, "by": "ci", "colors": COLORS}
    new, event = core.apply_action(state(), params, NOW)
    assert new["active"] == "green"
    assert new["colors"]["green"] == {**record, "started_at": STAMP, "spec": None}
    assert new["colors"]["blue"]["version"] == "v1"
    assert event == {
        "at": STAMP,
        "event": "switch",
        "from": "blue",
        "to": "green",
        "version": "v2",
        "digest": "sha256:v2",
        "previous_version": "v1",
        "by": "ci",
    }
    again, none = core.apply_action(new, params, NOW)
    assert none is None and again == new


def test_each_colour_keeps_its_own_spec_through_switches_and_a_reload() -> None:
    """A move back reads the colour's own recorded settings, not the last run's."""
    old = {**SPEC, "env": {"APP_LOG_LEVEL": "info"}}
    new = {**SPEC, "env": {"APP_FAULT_CRASH_AFTER_S": "40"}}
    first = state()
    first["colors"]["blue"]["spec"] = old
    params = {"action": "switch", "color": "green", "colors": COLORS, "by": "ci"}
    forward, _ = core.apply_action(
        first, {**params, "record": {"version": "v2", "config": "c2", "spec": new}}, NOW
    )
    back, event = core.apply_action(
        forward, {**params, "color": "blue", "record": forward["colors"]["blue"]}, NOW
    )
    assert back["colors"]["blue"]["spec"] == old and back["colors"]["green"]["spec"] == new
    assert event is not None and event["to"] == "blue"
    text = core.render_state(back)
    assert core.load_state(text, "/s", "archibald", COLORS)["colors"] == back["colors"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"action": "switch", "color": "green"}, "needs color and record.version"),
        ({"action": "switch", "color": "red", "record": {"version": "v"}}, "not one of"),
        ({"action": "switch", "color": "blue", "record": {"version": "v", "x": 1}}, "unknown keys"),
        (
            {"action": "switch", "color": "blue", "record": {"version": "v", "spec": {"x": 1}}},
            r"record\.spec has unknown keys \['x'\]",
        ),
        ({"action": "mark_bad"}, "needs version"),
        ({"action": "explode"}, "unknown action"),
    ],
)
def test_apply_action_errors(params: dict[str, Any], message: str) -> None:
    with pytest.raises(core.StateError, match=message):
        core.apply_action(state(), {"colors": COLORS, **params}, NOW)


def test_mark_and_clear_bad_and_history_cap() -> None:
    params = {"action": "mark_bad", "version": "v9", "reason": "5xx", "colors": COLORS}
    marked, event = core.apply_action(state(), {**params, "history_limit": 1}, NOW)
    assert marked["bad_versions"]["v9"]["reason"] == "5xx"
    assert event is not None and marked["history"] == [event]
    cleared, _ = core.apply_action(marked, {"action": "clear_bad", "version": "v9"}, NOW)
    assert "v9" not in cleared["bad_versions"]


def test_durable_write_fsyncs_file_and_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = tmp_path / "state.json"
    target.write_text("old")
    core.write_durably(str(target), "new\n")
    assert target.read_text() == "new\n"
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert synced[-1] == str(tmp_path)
    assert synced[0].startswith(str(tmp_path / ".state.json-"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_durable_write_keeps_the_old_file_when_the_move_fails(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")

    def broken_move(src: str, dest: str) -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        core.write_durably(str(target), "new", move=broken_move)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


# --- the lock --------------------------------------------------------------


def lock(token: str = "t1", expires_in: int = 60, owner: str = "run A") -> dict[str, Any]:
    return {
        "owner": owner,
        "token": token,
        "acquired_at": STAMP,
        "expires_at": core.iso(NOW + timedelta(seconds=expires_in)),
    }


def test_acquire_free_expired_and_forced() -> None:
    action, new, gone = core.plan_acquire("/l", None, "run B", 300, NOW)
    assert action == "created" and gone is None
    assert new["owner"] == "run B" and len(new["token"]) == 16
    assert new["expires_at"] == core.iso(NOW + timedelta(seconds=300))
    action, new, gone = core.plan_acquire("/l", lock(expires_in=-1), "run B", 300, NOW)
    assert action == "took_over" and gone == lock(expires_in=-1)
    action, _, _ = core.plan_acquire("/l", lock(), "run B", 300, NOW, force=True)
    assert action == "took_over"


def test_acquire_refuses_a_live_lock_naming_its_holder() -> None:
    with pytest.raises(core.LockError, match=r"held by run A .*bluegreen_lock_force"):
        core.plan_acquire("/l", lock(), "run B", 300, NOW)
    with pytest.raises(core.LockError, match="cannot be read"):
        core.plan_acquire("/l", {"unreadable": "not JSON"}, "run B", 300, NOW)


CI_RUN = "github-actions (CI run 42) from runner-1, promote 20261207T120000Z-7"


def test_a_cancelled_ci_runs_clean_up_takes_over_its_own_runs_lock() -> None:
    """A cancel stops ansible-playbook with SIGINT, which runs no `always:` (the lock
    stays held until its lease ends); the same CI run's rollback or abort, once the
    playbook has ended, takes over that run's lock, and only that run's."""
    held = lock(owner=CI_RUN)
    action, new, gone = core.plan_acquire(
        "/l",
        held,
        "github-actions (CI run 42) from runner-1, abort",
        300,
        NOW,
        take_over_from="(CI run 42)",
    )
    assert action == "took_over" and gone == held
    assert new["taken"]["how"] == "own run" and new["taken"]["from"] == CI_RUN
    # Another run's lock, or a run whose number only begins the same, is waited for.
    for other in ("(CI run 4)", "(CI run 421)", "(CI run 43)"):
        with pytest.raises(core.LockError, match="held by github-actions"):
            core.plan_acquire("/l", held, "cleanup", 300, NOW, take_over_from=other)
    with pytest.raises(core.LockError, match="cannot be read"):
        core.plan_acquire(
            "/l", {"unreadable": "(CI run 42)"}, "cleanup", 300, NOW, take_over_from="(CI run 42)"
        )
    # The orphaned run, if anything of it still renews, is told who took its lock.
    with pytest.raises(core.LockLost, match="clean-up of the same CI run"):
        core.check_held("/l", new, "t1", NOW)


def test_refresh_extends_only_the_holders_lease() -> None:
    action, new, _ = core.plan_acquire("/l", lock(), "", 300, NOW, token="t1")
    assert action == "refreshed" and new["token"] == "t1"
    assert new["expires_at"] == core.iso(NOW + timedelta(seconds=300))


@pytest.mark.parametrize(
    ("current", "message"),
    [
        pytest.param(None, "is gone", id="removed"),
        pytest.param(lock(token="t2", owner="run B"), "taken over: .*held by run B", id="taken"),
        pytest.param(lock(expires_in=-5), "expired at", id="expired"),
    ],
)
def test_a_run_that_lost_its_lock_is_stopped(current: dict[str, Any] | None, message: str) -> None:
    with pytest.raises(core.LockLost, match=message):
        core.check_held("/l", current, "t1", NOW)
    with pytest.raises(core.LockLost, match=message):
        core.plan_acquire("/l", current, "", 300, NOW, token="t1")


@pytest.mark.parametrize(
    ("current", "token", "force", "expected"),
    [
        (None, "t1", False, ("none", None)),
        (lock(), "t1", False, ("released", None)),
        (lock(token="t2"), "t1", False, ("none", None)),
        (lock(expires_in=-1), None, False, ("released", lock(expires_in=-1))),
        (lock(), None, True, ("released", lock())),
    ],
)
def test_plan_release(current: Any, token: str | None, force: bool, expected: Any) -> None:
    assert core.plan_release("/l", current, token, force, NOW) == expected


def test_fenced_writes_only_while_the_token_holds(tmp_path: Path) -> None:
    (tmp_path / core.LOCK_FILE).write_text(json.dumps(lock()))
    with core.fenced(str(tmp_path), "t1", lambda: NOW) as held:
        assert held["owner"] == "run A"
    (tmp_path / core.LOCK_FILE).write_text(json.dumps(lock(token="t2", owner="run B")))
    with (
        pytest.raises(core.LockLost, match="taken over"),
        core.fenced(str(tmp_path), "t1", lambda: NOW),
    ):
        pytest.fail("a run without the lock got inside the fence")


# --- the upstream marker ---------------------------------------------------


def test_marker_round_trip() -> None:
    text = core.render_marker("green", "v2", "sha256:x") + "\n# managed\nupstream a {}\n"
    assert core.parse_marker(text) == {"color": "green", "version": "v2", "digest": "sha256:x"}
    assert core.parse_marker("upstream a {}\n") is None
    assert core.parse_marker(None) is None
    assert core.parse_marker(core.UPSTREAM_MARKER + "{broken")["color"] is None  # type: ignore[index]


# --- drift -----------------------------------------------------------------


MARK_BLUE = {"color": "blue", "version": "v1"}
MARK_GREEN = {"color": "green", "version": "v2"}


@pytest.mark.parametrize(
    ("record", "upstream", "answer", "running", "expected"),
    [
        pytest.param(
            state(),
            MARK_BLUE,
            edge("blue", "v1"),
            colors(("blue", "v1", True)),
            [],
            id="consistent",
        ),
        pytest.param(
            core.empty_state("archibald", COLORS),
            None,
            edge(None),
            colors(),
            [],
            id="first-release",
        ),
        pytest.param(
            state(),
            MARK_BLUE,
            edge(None),
            colors(("blue", "v1", False)),
            [],
            id="active-colour-down-is-not-drift",
        ),
        pytest.param(
            state(),
            MARK_GREEN,
            edge("green", "v2"),
            colors(("blue", "v1", True), ("green", "v2", True)),
            [
                "nginx serves green (v2) but state.json says blue is active: a run stopped between "
                "the switch and the record"
            ],
            id="killed-between-switch-and-record",
        ),
        pytest.param(
            state(),
            MARK_GREEN,
            edge("blue", "v1"),
            colors(("blue", "v1", True), ("green", "v2", True)),
            [
                "the upstream file points at green but nginx serves blue: a run stopped between "
                "writing the file and reloading nginx, and the next reload (certbot, a provision "
                "run) would move traffic to green, which was never verified"
            ],
            id="killed-between-render-and-reload",
        ),
        pytest.param(
            core.empty_state("archibald", COLORS),
            MARK_BLUE,
            edge("blue", "v1"),
            colors(("blue", "v1", True), ("green", "v3", True)),
            [
                "state.json records no release (missing or empty) but containers of blue and green "
                "are running and nginx serves blue (v1); a release now would plan from nothing and "
                "could recreate a serving colour"
            ],
            id="empty-state-with-colours-running",
        ),
        pytest.param(
            state(),
            MARK_BLUE,
            edge("blue", "v7"),
            colors(("blue", "v7", True)),
            [
                "the containers of blue run version v7 but state.json records v1",
                "the containers of blue run image img-v7 but state.json records img-v1 for v1",
                "nginx serves blue with version v7 but state.json records v1",
            ],
            id="version-changed-behind-the-record",
        ),
    ],
)
def test_drift(
    record: dict[str, Any],
    upstream: dict[str, Any] | None,
    answer: dict[str, Any],
    running: dict[str, Any],
    expected: list[str],
) -> None:
    assert core.drift(record, upstream, answer, running) == expected


def test_drift_names_a_replaced_image() -> None:
    per_color = core.colors_of(
        [
            core.summarize_container(container("blue", s, "v1", image_id="img-new"))
            for s in SERVICES
        ],
        COLORS,
        SERVICES,
    )
    found = core.drift(state(), MARK_BLUE, edge("blue", "v1"), per_color)
    assert found == [
        "the containers of blue run image img-new but state.json records img-v1 for v1"
    ]


# --- plan ------------------------------------------------------------------


def release(version: str, **extra: Any) -> dict[str, Any]:
    return {
        "action": "release",
        "version": version,
        "image_id": f"img-{version}",
        "digest": f"sha256:{version}",
        "config": "c1",
        **extra,
    }


@pytest.mark.parametrize(
    ("record", "running", "request_", "expected"),
    [
        pytest.param(
            core.empty_state("archibald", COLORS),
            colors(),
            release("v1"),
            {"kind": "release", "to_color": "blue", "from_color": None, "why": "first release"},
            id="first",
        ),
        pytest.param(
            state(),
            colors(("blue", "v1", True)),
            release("v2"),
            {
                "kind": "release",
                "to_color": "green",
                "from_color": "blue",
                "from_version": "v1",
                "to_digest": "sha256:v2",
            },
            id="next",
        ),
        pytest.param(
            state(),
            colors(("blue", "v1", True)),
            release("v1"),
            {"kind": "noop", "to_color": "blue"},
            id="live-version-unchanged",
        ),
        pytest.param(
            state(),
            colors(("blue", "v1", True)),
            release("v1", config="c2"),
            {"kind": "release", "to_color": "green", "why": "container configuration changed"},
            id="live-version-new-config-goes-blue-green",
        ),
        pytest.param(
            state(),
            colors(("blue", "v1", True)),
            release("v1", image_id="img-moved"),
            {"kind": "release", "to_color": "green", "why": "image img-v1 → img-moved"},
            id="moved-tag-goes-blue-green",
        ),
        pytest.param(
            state(),
            colors(("blue", "v1", False)),
            release("v1"),
            {
                "kind": "release",
                "to_color": "green",
                "why": "the containers of blue are not all running",
            },
            id="active-colour-down",
        ),
        pytest.param(
            state(green="v0"),
            colors(),
            {"action": "rollback"},
            {
                "kind": "rollback",
                "to_color": "green",
                "to_version": "v0",
                "to_digest": "sha256:v0",
                "to_image_id": "img-v0",
                "warm": False,
            },
            id="rollback",
        ),
        pytest.param(
            state(green="v0"),
            colors(("blue", "v1", True), ("green", "v0", True)),
            {"action": "rollback"},
            {"kind": "rollback", "to_color": "green", "warm": True},
            id="rollback-inside-the-window-starts-nothing",
        ),
        pytest.param(
            state(green="v0"),
            colors(("blue", "v1", True), ("green", "v0", False)),
            {"action": "rollback"},
            {"kind": "rollback", "to_color": "green", "warm": False},
            id="rollback-to-a-stopped-colour-starts-it",
        ),
        pytest.param(
            state(green="v0"),
            colors(("blue", "v1", True), ("green", "v9", True)),
            {"action": "rollback"},
            {"kind": "rollback", "to_color": "green", "to_version": "v0", "warm": False},
            id="rollback-to-a-colour-running-another-image-starts-the-record",
        ),
        pytest.param(
            state(green="v0", bad=("v0",)),
            colors(),
            {"action": "rollback", "force": True},
            {"kind": "rollback", "to_version": "v0"},
            id="rollback-forced",
        ),
    ],
)
def test_plan(
    record: dict[str, Any], running: dict[str, Any], request_: dict[str, Any], expected: dict
) -> None:
    planned = core.plan(record, [], running, request_, COLORS)
    assert {k: planned[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("record", "found", "request_", "message"),
    [
        pytest.param(
            state(),
            ["nginx serves green"],
            release("v2"),
            r"does not match its record: nginx serves green\. Nothing was changed\. "
            r"Repair: .*playbooks/repair\.yml",
            id="drift",
        ),
        pytest.param(
            state(bad=("v2",)),
            [],
            release("v2"),
            "v2 is listed in bad_versions .*app_force=true",
            id="bad-version",
        ),
        pytest.param(
            state(green="v0", bad=("v0",)),
            [],
            {"action": "rollback"},
            "v0 is listed in bad_versions",
            id="rollback-to-bad-version",
        ),
        pytest.param(
            state(),
            [],
            {"action": "rollback"},
            "green has no recorded version",
            id="rollback-to-nothing",
        ),
        pytest.param(
            core.empty_state("a", COLORS),
            [],
            {"action": "rollback"},
            "no release is recorded",
            id="rollback-first",
        ),
        pytest.param(
            state(green="v0"),
            ["x"],
            {"action": "rollback"},
            "does not match",
            id="rollback-on-drift",
        ),
    ],
)
def test_plan_refuses(
    record: dict[str, Any], found: list[str], request_: dict[str, Any], message: str
) -> None:
    planned = core.plan(record, found, colors(), request_, COLORS)
    assert planned["kind"] == "refuse"
    assert planned["from_color"] == record["active"]
    assert re.search(message, planned["why"]), planned["why"]


def test_plan_repair_only_with_drift() -> None:
    assert core.plan(state(), [], colors(), {"action": "repair"}, COLORS)["kind"] == "noop"
    repair = core.plan(state(), ["a", "b"], colors(), {"action": "repair"}, COLORS)
    assert repair == {
        "kind": "repair",
        "why": "a; b",
        "from_color": "blue",
        "from_version": "v1",
        "from_digest": "sha256:v1",
    }


def test_a_container_list_entry_gives_the_same_facts_as_inspect() -> None:
    listed = {
        "Names": ["/archibald-backend-blue"],
        "Image": "registry/app@sha256:v1",
        "ImageID": "img-v1",
        "State": "running",
        "Labels": container("blue", "backend", "v1")["Config"]["Labels"],
    }
    from_list = core.summarize_container(listed)
    from_inspect = core.summarize_container(container("blue", "backend", "v1"))
    same = ("name", "color", "service", "version", "digest", "config", "image", "image_id")
    assert {k: from_list[k] for k in same} == {k: from_inspect[k] for k in same}
    assert from_list["running"] and from_list["restart_count"] is None


def test_a_fenced_write_renews_the_lease(tmp_path: Path) -> None:
    (tmp_path / core.LOCK_FILE).write_text(json.dumps(lock(expires_in=5)))
    later = NOW + timedelta(seconds=3)
    with core.fenced(str(tmp_path), "t1", lambda: later, lease_s=300) as held:
        assert held["expires_at"] == core.iso(later + timedelta(seconds=300))
    on_disk = json.loads((tmp_path / core.LOCK_FILE).read_text())
    assert on_disk["expires_at"] == core.iso(later + timedelta(seconds=300))
    assert on_disk["token"] == "t1"


def test_read_deadline(tmp_path: Path) -> None:
    path = tmp_path / "retire-green.json"
    assert core.read_deadline(str(path)) is None
    path.write_text('{"deadline": 1700000000}')
    assert core.read_deadline(str(path)) == 1700000000.0
    path.write_text('{"when": 5}')
    with pytest.raises(core.BlueGreenError, match="cannot read the retirement deadline"):
        core.read_deadline(str(path))


# --- image pruning -----------------------------------------------------------


def _released(versions: list[str]) -> dict[str, Any]:
    """A record after releasing `versions` in turn, alternating colours, each by digest."""
    state = core.empty_state("archibald", ["blue", "green"])
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for n, version in enumerate(versions):
        record = {"version": version, "digest": f"sha256:{version}", "image_id": f"id-{version}"}
        params = {"action": "switch", "color": ["blue", "green"][n % 2], "record": record}
        state, _ = core.apply_action(state, params, now + timedelta(minutes=n))
    return state


def _images(versions: list[str]) -> list[dict[str, Any]]:
    return [{"id": f"id-{v}", "tags": [v], "digests": [f"sha256:{v}"]} for v in versions]


def test_pruning_keeps_the_colours_and_the_last_versions_released() -> None:
    versions = [f"v{n}" for n in range(1, 21)]
    state = _released(versions)
    remove, kept = core.plan_prune(_images(versions), state, 5)
    # v20 and v19 run in the colours; v16-v20 are the last five released.
    assert sorted(kept) == sorted(f"id-v{n}" for n in range(16, 21))
    assert len(remove) == 15 and "id-v1" in remove


def test_twenty_releases_leave_a_bounded_number_of_images() -> None:
    """Disk stays bounded: after each of 20 releases the retirement keeps at most N + 2."""
    versions: list[str] = []
    on_disk: list[dict[str, Any]] = []
    for n in range(1, 21):
        versions.append(f"v{n}")
        on_disk += _images([f"v{n}"])
        remove, _ = core.plan_prune(on_disk, _released(versions), 3)
        on_disk = [i for i in on_disk if i["id"] not in remove]
        assert len(on_disk) <= 3 + 2
    assert [i["tags"][0] for i in on_disk] == ["v18", "v19", "v20"]


def test_an_image_is_kept_by_any_of_its_names_and_zero_keeps_all() -> None:
    state = _released(["v1", "v2"])
    images = [
        {"id": "id-x", "tags": [], "digests": ["sha256:v1"]},  # by digest only
        {"id": "id-v2", "tags": [], "digests": []},  # by image ID only
        {"id": "id-old", "tags": ["v0"], "digests": ["sha256:v0"]},
    ]
    remove, kept = core.plan_prune(images, state, 1)
    assert remove == ["id-old"] and kept == ["id-x", "id-v2"]
    assert core.plan_prune(images, state, 0) == ([], ["id-x", "id-v2", "id-old"])
