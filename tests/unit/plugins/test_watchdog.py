"""The host's watchdog (roles/bluegreen/files/watchdog.py): its decision with an
injected clock and injected probes and actions, and its hands on a temp 'host'
(the app's directory, the upstream file, fake nginx, Docker and health answers)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from conftest import FakeDocker, docker_doc

ROOT = Path(__file__).resolve().parents[3]
ROLE = ROOT / "roles" / "bluegreen"
# On the host the program imports the library installed beside it as `bluegreen`.
sys.path.insert(0, str(ROOT / "module_utils"))
_spec = importlib.util.spec_from_file_location("bluegreen_watchdog", ROLE / "files" / "watchdog.py")
assert _spec and _spec.loader
wd: Any = importlib.util.module_from_spec(_spec)
sys.modules["bluegreen_watchdog"] = wd  # dataclasses look their module up
_spec.loader.exec_module(wd)
core: Any = wd.core

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def settings(tmp: Path | None = None, **changes: Any) -> Any:
    base = tmp or Path("/nonexistent")
    values: dict[str, Any] = {
        "app": "archibald",
        "dir": str(base / "state"),
        "colors": ["blue", "green"],
        "services": ["backend", "frontend"],
        "ports": {
            "blue": {"backend": 8101, "frontend": 8102},
            "green": {"backend": 8201, "frontend": 8202},
        },
        "health_path": "/health",
        "upstreams_file": str(base / "upstreams.conf"),
        "maintenance_flag": str(base / "maintenance"),
        "edge_url": "https://127.0.0.1",
        "edge_host": "localhost",
        "edge_validate_certs": False,
        "textfile": str(base / "textfile" / "archibald_watchdog.prom"),
        "markers_file": str(base / "textfile" / "archibald_deploy.prom"),
        "verify_timeout_s": 0.05,
    }
    return wd.Settings(**{**values, **changes})


S = settings()
HEALTHY = wd.Seen("blue", "v1", None, (), {"archibald-backend-blue": 0})
FAILING = wd.Seen(
    "blue", "v1", None, ("backend: no answer: timed out",), {"archibald-backend-blue": 0}
)


def run(seen: list[Any], start: float = 0.0, step: float = 2.0, memory: Any = None) -> list[Any]:
    """assess() over probes ``step`` seconds apart; the verdict kinds."""
    memory = memory or wd.Memory(started=start)
    kinds = []
    for n, one in enumerate(seen):
        memory, verdict = wd.assess(memory, one, start + n * step, S)
        kinds.append(verdict.kind)
    return kinds


# --- the decision ------------------------------------------------------------


@pytest.mark.parametrize(
    ("probes", "kinds"),
    [
        ([HEALTHY, FAILING, FAILING, FAILING], ["ok", "failing", "failing", "act"]),
        (
            [HEALTHY, FAILING, FAILING, HEALTHY, FAILING, FAILING],
            ["ok", "failing", "failing", "ok", "failing", "failing"],
        ),
        # Never healthy since the start: not armed within the startup grace (60 s).
        ([FAILING] * 4, ["waiting"] * 4),
    ],
    ids=["three in a row", "a success resets the count", "a boot is not counted"],
)
def test_consecutive_failures(probes: list[Any], kinds: list[str]) -> None:
    assert run(probes) == kinds


def test_after_the_startup_grace_a_never_healthy_colour_is_counted() -> None:
    kinds = run([FAILING] * 5, start=0.0, step=30.0)
    assert kinds == ["waiting", "waiting", "failing", "failing", "act"]


def restarts(count: int) -> Any:
    return wd.Seen("blue", "v1", None, (), {"archibald-backend-blue": count})


@pytest.mark.parametrize(
    ("counts", "kinds"),
    [
        ([0, 0, 1], ["ok", "ok", "act"]),
        # A release recreated the container: its count starts again at 0.
        ([4, 0, 0], ["ok", "ok", "ok"]),
        ([0, 0, 0], ["ok", "ok", "ok"]),
    ],
    ids=["a restart by Docker acts at once", "a recreated container is no restart", "steady"],
)
def test_a_restart_count_that_rises(counts: list[int], kinds: list[str]) -> None:
    assert run([restarts(c) for c in counts]) == kinds


def test_a_restart_stays_in_sight_for_the_last_probes_while_the_lock_is_held() -> None:
    memory = wd.Memory(started=0.0)
    memory, _ = wd.assess(memory, restarts(0), 0, S)
    memory, verdict = wd.assess(memory, restarts(1), 2, S)
    assert verdict.kind == "act" and "archibald-backend-blue restarted by Docker" in verdict.why
    memory = wd.after_action(memory, 2, "stood_back")  # another run holds the lock
    kinds = []
    for n in range(3, 7):
        memory, verdict = wd.assess(memory, restarts(1), n * 2, S)
        kinds.append(verdict.kind)
    assert kinds == ["act", "act", "ok", "ok"]


def test_cool_down_after_acting_then_acting_again() -> None:
    memory = wd.Memory(started=0.0)
    for n, one in enumerate([HEALTHY, FAILING, FAILING, FAILING]):
        memory, verdict = wd.assess(memory, one, n * 2.0, S)
    assert verdict.kind == "act"
    memory = wd.after_action(memory, 6.0, "switch")
    kinds = []
    for now in (8.0, 10.0, 12.0, 30.0, 66.0):
        memory, verdict = wd.assess(memory, FAILING, now, S)
        kinds.append(verdict.kind)
    assert kinds == ["failing", "failing", "cooling", "cooling", "act"]


def test_a_hold_resets_the_count_and_the_live_colour_changing_starts_over() -> None:
    canary = wd.Seen(None, None, "a canary of v2 on green is in progress")
    assert run([HEALTHY, FAILING, FAILING, canary, FAILING]) == [
        "ok",
        "failing",
        "failing",
        "hold",
        "failing",
    ]
    switched = wd.Seen("green", "v2", None, ("backend: HTTP 503",), {})
    assert run([HEALTHY, FAILING, FAILING, switched]) == ["ok", "failing", "failing", "failing"]


def state(active: str | None = "blue", warm_version: str | None = "v2", **extra: Any) -> dict:
    record = core.empty_state("archibald", ["blue", "green"])
    record["active"] = active
    record["colors"]["blue"].update(version="v1", digest="sha256:" + "1" * 64)
    record["colors"]["green"].update(version=warm_version, digest="sha256:" + "2" * 64)
    return {**record, **extra}


CANARY = {
    "color": "green",
    "version": "v2",
    "digest": None,
    "weight": 5,
    "step": 0,
    "steps": [{"weight": 5}],
    "paused": False,
    "since": "x",
    "by": "ci",
}


@pytest.mark.parametrize(
    ("record", "maintenance", "marker", "reason"),
    [
        (None, False, None, "the record cannot be read"),
        (state(active=None), False, None, "no release is recorded"),
        (state(canary=CANARY), False, None, "a canary of v2 on green is in progress"),
        (state(), True, None, "maintenance mode is on"),
        (state(warm_version=None), False, None, "the record shows no warm colour"),
        (state(), False, {"color": "green"}, "points at green but the record says blue"),
        (state(), False, {"color": "blue"}, None),
    ],
    ids=["unreadable", "no release", "canary", "maintenance", "no warm", "drift", "may act"],
)
def test_when_the_watchdog_holds_back(
    record: Any, maintenance: bool, marker: Any, reason: str | None
) -> None:
    found = wd.hold_reason(record, maintenance, marker, ["blue", "green"])
    assert (found is None) if reason is None else (reason in found)


@pytest.mark.parametrize(
    ("record", "warm_failures", "kind", "why"),
    [
        (state(), [], "switch", "green (v2) is healthy"),
        (state(), ["backend: no answer"], "restart", "green is not healthy: backend: no answer"),
        (
            state(bad_versions={"v2": {"reason": "crashed", "at": "x", "by": "y"}}),
            [],
            "restart",
            "runs v2, marked bad (crashed)",
        ),
    ],
    ids=["warm healthy", "warm unhealthy", "warm marked bad"],
)
def test_switch_or_restart(record: dict, warm_failures: list[str], kind: str, why: str) -> None:
    verdict = wd.choose(record, warm_failures, ["blue", "green"])
    assert verdict.kind == kind and why in verdict.why


def test_tick_acts_once_then_cools_down_and_stands_back_without_cooling() -> None:
    probes = iter([HEALTHY, FAILING, FAILING, FAILING, FAILING, FAILING, FAILING])
    outcomes = iter(["stood_back", "switch"])
    acted: list[str] = []
    lines: list[str] = []

    def act(seen: Any, why: str) -> tuple[str, str]:
        acted.append(why)
        return next(outcomes), ""

    memory = wd.Memory(started=0.0)
    for n in range(7):
        memory = wd.tick(
            memory, n * 2.0, lambda: next(probes), act, S, lambda e, **_: lines.append(e)
        )
    # Stood back at the 4th probe, acted at the 5th, then cooling.
    assert len(acted) == 2 and "3 failed probes of blue in a row" in acted[0]
    assert lines.count("watchdog_cooling") == 0  # failures restart their count after acting
    assert lines.count("watchdog_probe_failed") == 4


# --- the host ------------------------------------------------------------------


class Fake:
    """Health answers by port, the edge's answer, Docker's containers, commands run."""

    def __init__(self) -> None:
        self.down: set[int] = {8101}
        self.edge = {"color": "green", "version": "v2"}
        self.calls: list[list[str]] = []
        self.fail_command: str | None = None
        self.containers = {
            color: [
                {
                    "name": f"archibald-{service}-{color}",
                    "service": service,
                    "running": True,
                    "restarting": False,
                    "restart_count": 0,
                }
                for service in ("backend", "frontend")
            ]
            for color in ("blue", "green")
        }

    def fetch(
        self, url: str, timeout: float, headers: Any = None, validate: bool = True
    ) -> tuple[int | None, str, str | None]:
        if url.startswith("https://"):
            return 200, json.dumps({"status": "ok", **self.edge}), None
        port = int(url.split(":")[2].split("/")[0])
        if port in self.down:
            return None, "", "no answer: timed out"
        color = "blue" if port < 8200 else "green"
        return (
            200,
            json.dumps({"color": color, "version": {"blue": "v1", "green": "v2"}[color]}),
            None,
        )

    def command(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        if self.fail_command and " ".join(argv).startswith(self.fail_command):
            return 1, "", f"{self.fail_command} failed"
        return 0, "", ""


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[Any, Fake, Path]]:
    (tmp_path / "state").mkdir()
    (tmp_path / "textfile").mkdir()
    (tmp_path / "state" / "state.json").write_text(core.render_state(state()))
    (tmp_path / "upstreams.conf").write_text(
        core.upstream_text("blue", "v1", None, "upstream blue {}")
    )
    for color in ("blue", "green"):
        (tmp_path / "state" / f"upstreams-{color}.conf").write_text(f"upstream {color} {{}}\n")
    fake = Fake()
    lines: list[tuple[str, dict]] = []
    h = wd.Host(
        settings(tmp_path),
        fetch=fake.fetch,
        containers=lambda color: fake.containers[color],
        command=fake.command,
        sleep=lambda _s: None,
        log=lambda event, **fields: lines.append((event, fields)),
    )
    h.lines = lines
    yield h, fake, tmp_path


def recorded(tmp: Path) -> dict:
    return json.loads((tmp / "state" / "state.json").read_text())


def test_observe_sees_the_live_colour_fail_and_its_restart_counts(host: Any) -> None:
    h, fake, _ = host
    seen = h.observe()
    assert (seen.live, seen.version) == ("blue", "v1")
    assert seen.failures == ("backend: no answer: timed out",)
    assert seen.restarts == {"archibald-backend-blue": 0, "archibald-frontend-blue": 0}
    fake.down = set()
    fake.containers["blue"][1]["restarting"] = True
    assert h.observe().failures == ("frontend: archibald-frontend-blue is restarting",)


def test_observe_holds_in_maintenance(host: Any) -> None:
    h, _, tmp = host
    (tmp / "maintenance").write_text("")
    assert h.observe().hold == "maintenance mode is on"


def test_a_healthy_warm_colour_takes_the_traffic_like_a_release(host: Any) -> None:
    h, fake, tmp = host
    outcome, _ = h.act(h.observe(), "3 failed probes of blue in a row")
    assert outcome == "switch"
    assert fake.calls == [["nginx", "-t"], ["systemctl", "reload", "nginx"]]
    marker = core.parse_marker((tmp / "upstreams.conf").read_text())
    assert marker["color"] == "green" and marker["version"] == "v2"
    assert "upstream green {}" in (tmp / "upstreams.conf").read_text()
    record = recorded(tmp)
    assert record["active"] == "green"
    last = record["history"][-1]
    assert last["event"] == "watchdog_switch" and last["event"] in core.EVENTS
    assert (last["from"], last["to"]) == ("blue", "green") and "3 failed probes" in last["reason"]
    retire = json.loads((tmp / "state" / "retire-blue.json").read_text())
    assert retire["color"] == "blue" and retire["deadline"] > T0.timestamp()
    assert not (tmp / "state" / "release.lock").exists(), "the watchdog left its lock"
    status = json.loads((tmp / "state" / "watchdog.json").read_text())
    assert status["actions"] == {"switch": 1, "restart": 0}
    assert status["last_action"]["action"] == "switch"
    metrics = (tmp / "textfile" / "archibald_watchdog.prom").read_text()
    assert 'archibald_watchdog_actions_total{app="archibald",action="switch"} 1' in metrics
    assert any(event == "watchdog_switch" for event, _ in h.lines)


def test_it_stands_back_while_another_run_holds_the_lock(host: Any) -> None:
    h, fake, tmp = host
    held = {
        "owner": "release X",
        "token": "t",
        "acquired_at": core.iso(datetime.now(UTC)),
        "expires_at": core.iso(datetime.now(UTC) + timedelta(minutes=5)),
    }
    (tmp / "state" / "release.lock").write_text(json.dumps(held))
    before = recorded(tmp)
    outcome, why = h.act(h.observe(), "3 failed probes")
    assert outcome == "stood_back" and "held by release X" in why
    assert fake.calls == [] and recorded(tmp) == before
    assert json.loads((tmp / "state" / "release.lock").read_text()) == held


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("bad", "marked bad"),
        ("warm down", "green is not healthy: backend: no answer"),
        ("warm stopped", "archibald-frontend-green is not running"),
        ("no upstream file", "no upstream file for green"),
        ("nginx -t", "nginx refused the switch to green (v2): nginx -t failed"),
        ("edge", "nginx did not answer from green after the switch (blue v1)"),
    ],
)
def test_otherwise_it_restarts_the_live_colour(host: Any, change: str, why: str) -> None:
    h, fake, tmp = host
    before_upstream = (tmp / "upstreams.conf").read_text()
    if change == "bad":
        record = state(bad_versions={"v2": {"reason": "crashed", "at": "x", "by": "y"}})
        (tmp / "state" / "state.json").write_text(core.render_state(record))
    elif change == "warm down":
        fake.down.add(8201)
    elif change == "warm stopped":
        fake.containers["green"][1]["running"] = False
    elif change == "no upstream file":
        (tmp / "state" / "upstreams-green.conf").unlink()
    elif change == "nginx -t":
        fake.fail_command = "nginx -t"
    elif change == "edge":
        fake.edge = {"color": "blue", "version": "v1"}
    outcome, _ = h.act(h.observe(), "3 failed probes of blue in a row")
    assert outcome == "restart"
    assert fake.calls[-1] == ["docker", "restart", "-t", "75", "archibald-backend-blue"]
    assert (tmp / "upstreams.conf").read_text() == before_upstream, "nginx points at blue still"
    record = recorded(tmp)
    assert record["active"] == "blue"
    last = record["history"][-1]
    assert last["event"] == "watchdog_restart" and last["event"] in core.EVENTS
    assert last["containers"] == ["archibald-backend-blue"] and why in last["reason"]
    status = json.loads((tmp / "state" / "watchdog.json").read_text())
    assert status["actions"] == {"switch": 0, "restart": 1}
    assert not (tmp / "state" / "release.lock").exists()


def test_under_the_lock_it_looks_again_and_holds_for_a_canary_begun_meanwhile(host: Any) -> None:
    h, fake, tmp = host
    seen = h.observe()
    (tmp / "state" / "state.json").write_text(core.render_state(state(canary=CANARY)))
    outcome, why = h.act(seen, "3 failed probes")
    assert outcome == "held" and "canary" in why
    assert fake.calls == []


def test_rerun_after_a_switch_acts_on_the_new_live_colour_only(host: Any) -> None:
    """A second run with the same probe finds green live: it changes nothing."""
    h, fake, tmp = host
    seen = h.observe()
    assert h.act(seen, "first")[0] == "switch"
    calls = len(fake.calls)
    outcome, why = h.act(seen, "again")
    assert outcome == "held" and "changed to green" in why
    assert len(fake.calls) == calls and recorded(tmp)["active"] == "green"


def test_the_counters_survive_a_restart_of_the_watchdog(host: Any) -> None:
    h, fake, tmp = host
    h.act(h.observe(), "first")
    again = wd.Host(settings(tmp), fetch=fake.fetch, containers=lambda c: fake.containers[c])
    assert again.status["actions"] == {"switch": 1, "restart": 0}


# --- Prometheus' deploy markers ------------------------------------------------------


def markers(tmp: Path) -> str:
    return (tmp / "textfile" / "archibald_deploy.prom").read_text()


def switched_at(text: str) -> int:
    found = [line for line in text.splitlines() if line.startswith("archibald_deploy_switch_")]
    assert len(found) == 1, text
    return int(found[0].rsplit(" ", 1)[1])


def with_markers(tmp: Path, record: dict[str, Any]) -> str:
    """The host as a release left it: ``record`` with its switch at T0, and its markers."""
    event = {"at": core.iso(T0), "event": "switch", "from": None, "to": record["active"]}
    record = core.append_event(record, event)
    (tmp / "state" / "state.json").write_text(core.render_state(record))
    text = core.render_markers("archibald", ["blue", "green"], record, T0)
    (tmp / "textfile" / "archibald_deploy.prom").write_text(text)
    return text


def test_its_switch_moves_the_deploy_markers_to_the_colour_it_switched_to(host: Any) -> None:
    """The defect: the markers named the failed colour after the watchdog's switch, so
    TargetDown watched it and the traffic weights said 100 % to it."""
    h, _, tmp = host
    with_markers(tmp, state())
    assert h.act(h.observe(), "3 failed probes of blue in a row")[0] == "switch"
    text = markers(tmp)
    assert 'archibald_deploy_info{color="green",version="v2"} 1' in text
    assert 'archibald_deploy_info{color="blue"' not in text
    assert 'archibald_traffic_weight_percent{color="green"} 100' in text
    assert 'archibald_traffic_weight_percent{color="blue"} 0' in text
    moved = core.parse_iso(recorded(tmp)["history"][-1]["at"])
    assert switched_at(text) == int(moved.timestamp()) > int(T0.timestamp())
    # The role's text for the record, to the byte: one owner.
    assert text == core.render_markers("archibald", ["blue", "green"], recorded(tmp), T0)
    assert oct((tmp / "textfile" / "archibald_deploy.prom").stat().st_mode & 0o777) == "0o644"


def test_its_restart_of_the_live_colour_keeps_the_switch_time(host: Any) -> None:
    h, fake, tmp = host
    before = with_markers(tmp, state())
    fake.down.add(8201)  # the warm colour is not healthy: restart
    assert h.act(h.observe(), "3 failed probes of blue in a row")[0] == "restart"
    assert recorded(tmp)["history"][-1]["event"] == "watchdog_restart"
    assert markers(tmp) == before
    assert switched_at(markers(tmp)) == int(T0.timestamp())


def test_at_its_start_it_puts_right_markers_that_do_not_match_the_record(host: Any) -> None:
    """A switch whose markers were not written (an older watchdog, a full disk)."""
    h, _, tmp = host
    with_markers(tmp, state(active="green"))
    stale = core.render_markers(
        "archibald", ["blue", "green"], recorded(tmp) | {"active": "blue"}, T0
    )
    (tmp / "textfile" / "archibald_deploy.prom").write_text(stale)
    h.sync_markers()
    assert 'archibald_deploy_info{color="green",version="v2"} 1' in markers(tmp)
    assert switched_at(markers(tmp)) == int(T0.timestamp()), "a restart moved the switch time"
    h.sync_markers()
    assert markers(tmp) == core.render_markers("archibald", ["blue", "green"], recorded(tmp), T0)


def test_without_the_textfile_directory_the_switch_still_counts(host: Any) -> None:
    h, _, tmp = host
    for found in (tmp / "textfile").iterdir():
        found.unlink()
    (tmp / "textfile").rmdir()
    assert h.act(h.observe(), "3 failed probes of blue in a row")[0] == "switch"
    assert recorded(tmp)["active"] == "green"
    failed = [fields for event, fields in h.lines if event == "watchdog_markers_failed"]
    assert failed and "does not exist" in failed[0]["reason"]


def test_metrics_exist_before_any_action() -> None:
    status = {"actions": {"switch": 0, "restart": 0}, "live": "blue", "healthy": True}
    text = wd.render_metrics("archibald", status)
    assert 'archibald_watchdog_actions_total{app="archibald",action="restart"} 0' in text
    assert 'archibald_watchdog_last_action_timestamp_seconds{app="archibald"} 0' in text
    assert 'archibald_watchdog_live_healthy{app="archibald",color="blue"} 1' in text


# --- Docker's socket ---------------------------------------------------------------


def test_containers_are_read_from_dockers_socket(docker: FakeDocker) -> None:
    docker.containers = {
        "archibald-backend-blue": docker_doc("archibald-backend-blue", "blue", "backend", 3),
        "archibald-backend-green": docker_doc("archibald-backend-green", "green", "backend"),
    }
    found = wd.core.docker_containers(docker.path, "archibald", "blue", 2.0)
    assert [(c["name"], c["service"], c["restart_count"]) for c in found] == [
        ("archibald-backend-blue", "backend", 3)
    ]


# --- what the role installs ----------------------------------------------------------


def render(template: str, **extra: Any) -> str:
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables |= yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    variables |= {"ansible_managed": "managed", "app_version": "v1", **extra}
    # The role's own variables are templates too (vars/main.yml): trusted, as Ansible does.
    variables = {k: trust_as_template(v) if isinstance(v, str) else v for k, v in variables.items()}
    source = trust_as_template((ROLE / "templates" / template).read_text())
    return str(Templar(loader=DataLoader(), variables=variables).template(source))


def test_the_settings_the_role_writes_are_what_the_watchdog_reads() -> None:
    loaded = wd.load_settings(render("watchdog.json.j2"), "watchdog.json")
    assert loaded.dir == "/var/lib/archibald/archibald"
    assert loaded.services == ["backend", "frontend"]
    assert (loaded.interval_s, loaded.timeout_s, loaded.failures) == (2.0, 2.0, 3)
    # The defaults react within 15 s: the first probe after the failure, then
    # the rest of the failed probes in a row, each waiting out its timeout.
    worst = loaded.interval_s + loaded.failures * max(loaded.interval_s, loaded.timeout_s)
    assert worst + 1 <= 15, worst
    assert loaded.textfile == "/var/lib/prometheus/node-exporter/archibald_watchdog.prom"
    # The same file as the role's deploy markers (bluegreen_state's markers_file).
    assert loaded.markers_file == "/var/lib/prometheus/node-exporter/archibald_deploy.prom"


def test_bad_settings_say_what_to_do() -> None:
    with pytest.raises(core.BlueGreenError, match=r"unknown settings.*provision the host again"):
        wd.load_settings(json.dumps({**dataclasses.asdict(S), "extra": 1}), "w.json")
    with pytest.raises(core.BlueGreenError, match="failures >= 1"):
        wd.load_settings(json.dumps({**dataclasses.asdict(S), "failures": 0}), "w.json")


def test_the_unit_runs_the_program_with_the_library_and_its_settings() -> None:
    unit = render("watchdog.service.j2")
    assert "Environment=PYTHONPATH=/usr/local/lib/archibald-release" in unit
    assert (
        "ExecStart=/usr/bin/python3 /usr/local/lib/archibald-release/watchdog.py "
        "/etc/archibald-watchdog.json"
    ) in unit
    assert "Restart=always" in unit and "TimeoutStopSec=240" in unit


# --- the read-only observer (watchdog.py --observe) ----------------------------


def listed(color: str, service: str, version: str, state: str = "running") -> dict[str, Any]:
    """One entry of Docker's container list, as the observer reads it."""
    return {
        "Names": [f"/archibald-{service}-{color}"],
        "Labels": {
            "org.archibald.app": "archibald",
            "org.archibald.color": color,
            "org.archibald.service": service,
            "org.archibald.version": version,
        },
        "Image": f"127.0.0.1:5000/archibald/app:{version}",
        "ImageID": f"sha256:{version}",
        "State": state,
    }


def test_the_observer_prints_the_engines_facts_and_nothing_to_act_with(host: Any) -> None:
    h, fake, tmp = host
    fake.edge = {"color": "blue", "version": "v1"}
    lock = {
        "owner": "ci run 7",
        "token": "0123456789abcdef",
        "acquired_at": core.iso(T0),
        "expires_at": core.iso(T0 + timedelta(minutes=5)),
    }
    (tmp / "state" / "release.lock").write_text(json.dumps(lock))
    containers = [
        listed(c, s, v)
        for c, v in (("blue", "v1"), ("green", "v2"))
        for s in ("backend", "frontend")
    ]
    facts = wd.observed(h.settings, T0, fake.fetch, lambda: containers)
    assert facts["observed_at"] == core.iso(T0)
    assert facts["state"]["active"] == "blue" and facts["drift"] == []
    assert facts["colors"]["blue"]["running"] and facts["colors"]["green"]["version"] == "v2"
    assert facts["edge"]["color"] == "blue" and facts["maintenance"] is False
    # The lock says who holds it and until when, never its token: a token
    # would let a reader of the plan's log renew or give back another run's lock.
    assert facts["lock"]["owner"] == "ci run 7" and "token" not in facts["lock"]
    assert "0123456789abcdef" not in json.dumps(facts)
    assert "plan" not in facts
    # What cd-plan.py makes of it: bluegreen.plan over these facts.
    made = core.plan(
        facts["state"],
        facts["drift"],
        facts["colors"],
        {"action": "release", "version": "v3"},
        facts["colors_order"],
    )
    assert (made["kind"], made["to_color"], made["to_version"]) == ("release", "green", "v3")


def test_the_observer_reports_drift_as_the_engine_does(host: Any) -> None:
    h, fake, _ = host
    # nginx answers from green while the record says blue (the fixture's edge).
    facts = wd.observed(h.settings, T0, fake.fetch, lambda: [listed("blue", "backend", "v1")])
    assert facts["drift"], facts
    assert not facts["colors"]["blue"]["running"]  # frontend missing


def test_observe_mode_exits_1_with_the_reason_when_the_host_cannot_be_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert wd.main(["watchdog.py", "--observe", str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err
    assert "archibald observer: cannot read the host" in err and "provision the host" in err
    assert wd.main(["watchdog.py", "--observe"]) == 2
