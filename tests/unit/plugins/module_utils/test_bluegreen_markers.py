"""Prometheus' deploy markers (module_utils/bluegreen.py render_markers): the one
owner of their text, which the role (bluegreen_state's markers_file) and the
host's watchdog both write. The expected texts are what the role's template
(deploy.prom.j2, removed since) rendered for the same states, byte for byte after
its header, with Ansible's clock at the write: a test compared the two before
the role wrote the markers through this function."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils import bluegreen as core

COLORS = ["blue", "green"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)  # 1767225600
LATER = T0 + timedelta(hours=1)  # the clock of the writer, when it is not the event's


def step(state: dict[str, Any], minutes: int, **params: Any) -> dict[str, Any]:
    """``state`` after one write of the record, ``minutes`` after T0."""
    new, _ = core.apply_action(
        state, {"colors": COLORS, "by": "ci", **params}, T0 + timedelta(minutes=minutes)
    )
    return new


def switched() -> dict[str, Any]:
    """v1 on blue, then v2 on green: a plain release."""
    state = step(
        core.empty_state("archibald", COLORS),
        0,
        action="switch",
        color="blue",
        record={"version": "v1"},
    )
    return step(state, 10, action="switch", color="green", record={"version": "v2"})


def canary(weight: int) -> dict[str, Any]:
    record = {
        "color": "green",
        "version": "v2",
        "digest": None,
        "weight": weight,
        "step": 1,
        "steps": [{"weight": 5}, {"weight": weight}],
        "paused": False,
        "since": None,
        "by": "ci",
    }
    blue = step(
        core.empty_state("archibald", COLORS),
        0,
        action="switch",
        color="blue",
        record={"version": "v1"},
    )
    return step(
        blue, 20, action="canary", canary=record, event="canary_step", record={"version": "v2"}
    )


def aborted() -> dict[str, Any]:
    """A canary aborted by its gate, then its version marked bad (no move of traffic)."""
    state = step(
        canary(25),
        30,
        action="canary",
        canary=None,
        event="canary_abort",
        reason="5xx above the stable colour's",
    )
    return step(state, 31, action="mark_bad", version="v2", reason="canary aborted")


def rolled_back() -> dict[str, Any]:
    state = step(
        switched(),
        40,
        action="switch",
        color="blue",
        record={"version": "v1"},
        event="auto_rollback",
    )
    return step(state, 41, action="mark_bad", version="v2", reason="error ratio")


def watchdog_switched() -> dict[str, Any]:
    return step(
        switched(),
        50,
        action="switch",
        color="blue",
        record={"version": "v1"},
        event="watchdog_switch",
    )


def watchdog_restarted() -> dict[str, Any]:
    """A restart of the live colour's containers by the watchdog moves no traffic."""
    event = {
        "at": core.iso(T0 + timedelta(minutes=55)),
        "event": "watchdog_restart",
        "color": "blue",
        "version": "v1",
        "containers": ["archibald-backend-blue"],
    }
    return core.append_event(watchdog_switched(), event)


def text(active: str, version: str, at: datetime, rollbacks: int, blue: int, green: int) -> str:
    return f"""\
# HELP archibald_deploy_info The colour serving traffic and its version.
# TYPE archibald_deploy_info gauge
archibald_deploy_info{{color="{active}",version="{version}"}} 1
# HELP archibald_deploy_switch_timestamp_seconds When traffic last moved (a switch, a canary step, an abort).
# TYPE archibald_deploy_switch_timestamp_seconds gauge
archibald_deploy_switch_timestamp_seconds {int(at.timestamp())}
# HELP archibald_deploy_auto_rollbacks_total Releases rolled back by the metric gate.
# TYPE archibald_deploy_auto_rollbacks_total counter
archibald_deploy_auto_rollbacks_total {rollbacks}
# HELP archibald_traffic_weight_percent Share of clients each colour gets (a canary's step, else 100 and 0).
# TYPE archibald_traffic_weight_percent gauge
archibald_traffic_weight_percent{{color="blue"}} {blue}
archibald_traffic_weight_percent{{color="green"}} {green}
"""  # noqa: E501 the HELP lines are one line each in the file


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


# (state, what the markers say); the switch time is the last move of traffic in the record.
CASES = {
    "plain switch": (switched(), text("green", "v2", minutes(10), 0, 0, 100)),
    "canary at 5 %": (canary(5), text("blue", "v1", minutes(20), 0, 95, 5)),
    "canary at 50 %": (canary(50), text("blue", "v1", minutes(20), 0, 50, 50)),
    "after an abort": (aborted(), text("blue", "v1", minutes(30), 1, 100, 0)),
    "after an auto-rollback": (rolled_back(), text("blue", "v1", minutes(40), 1, 100, 0)),
    "after the watchdog's switch": (
        watchdog_switched(),
        text("blue", "v1", minutes(50), 0, 100, 0),
    ),
    # The watchdog's restart of the live colour moves no traffic: the switch time stays.
    "after the watchdog's restart": (
        watchdog_restarted(),
        text("blue", "v1", minutes(50), 0, 100, 0),
    ),
}


@pytest.mark.parametrize(("state", "expected"), CASES.values(), ids=CASES.keys())
def test_the_markers_say_who_serves_what_share_since_when(
    state: dict[str, Any], expected: str
) -> None:
    rendered = core.render_markers("archibald", COLORS, state, LATER)
    header, body = rendered.split("\n", 1)
    assert header.startswith("# ") and "module_utils/bluegreen.py" in header
    assert body == expected
    assert core.render_markers("archibald", COLORS, state, LATER + timedelta(days=1)) == rendered


def test_before_any_release_no_colour_serves_and_the_clock_is_the_writers() -> None:
    rendered = core.render_markers("archibald", COLORS, core.empty_state("archibald", COLORS), T0)
    assert "archibald_deploy_info{" not in rendered
    assert f"archibald_deploy_switch_timestamp_seconds {int(T0.timestamp())}\n" in rendered
    assert 'archibald_traffic_weight_percent{color="blue"} 0\n' in rendered


def test_the_markers_file_is_the_apps_in_the_textfile_directory() -> None:
    found = core.markers_path("/var/lib/prometheus/node-exporter", "archibald")
    assert found == "/var/lib/prometheus/node-exporter/archibald_deploy.prom"


def state_writes(node: Any) -> list[dict[str, Any]]:
    """Every bluegreen_state call in a task file's tree (blocks included)."""
    if isinstance(node, list):
        return [found for item in node for found in state_writes(item)]
    if not isinstance(node, dict):
        return []
    here = [node["bluegreen_state"]] if isinstance(node.get("bluegreen_state"), dict) else []
    return here + [
        found for key in ("block", "rescue", "always") for found in state_writes(node.get(key))
    ]


def test_every_move_the_role_records_writes_the_markers() -> None:
    """A switch, a canary step or its end moves traffic: its write carries the markers."""
    tasks = Path(__file__).resolve().parents[4] / "roles" / "bluegreen" / "tasks"
    moves = {
        f"{path.name}: {call.get('event')}": call.get("markers_file")
        for path in sorted(tasks.glob("*.yml"))
        for call in state_writes(yaml.safe_load(path.read_text()))
        if call.get("action") in ("switch", "canary") and call.get("event") != "canary_pause"
    }
    assert len(moves) >= 4, moves  # move, repair, canary step, canary abort
    assert moves == dict.fromkeys(moves, "{{ _bluegreen_markers_file }}")
