"""The host's watchdog heals the live colour by itself, with no playbook running:
a hung backend (docker pause) under light load, and a colour that crash-loops.
Users must be served again within 15 s; the record shows the watchdog's switch,
its counter for Prometheus rose and the deploy markers name the colour it
switched to. Each test starts from the host as the part before left it (one
colour serving a good version, no canary, the watchdog running) and leaves it
so: the watchdog's own switch goes back to that colour."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from conftest import (
    HOST_CONTAINER,
    VERSIONS,
    other,
    probe,
    read_state,
    run_playbook,
    serving,
    wait_for,
)

from harness import faults
from harness.wait import WaitTimeout

UNIT = "archibald-watchdog"
REACTION_S = 15
SETTINGS = "/etc/archibald-watchdog.json"
APP = "--filter label=org.archibald.app=archibald"


def host_now(host: Any) -> float:
    return float(host.check_output("date +%s.%N"))


def at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def actions(host: Any) -> dict[str, float]:
    """The watchdog's counters and last action, as node exporter exports them."""
    out = host.check_output(
        "curl -fsS http://127.0.0.1:9100/metrics | grep '^archibald_watchdog_' || true"
    )
    found: dict[str, float] = {}
    for line in out.splitlines():
        name, value = line.rsplit(" ", 1)
        if 'action="' in name:
            found[name.split('action="')[1].split('"')[0]] = float(value)
        elif name.startswith("archibald_watchdog_last_action_timestamp_seconds"):
            found["last"] = float(value)
    return found


def deploy_markers(host: Any) -> dict[str, Any]:
    """Prometheus' deploy markers as node exporter exports them: who serves (colour,
    version), each colour's share, when traffic last moved."""
    out = host.check_output(
        "curl -fsS http://127.0.0.1:9100/metrics | grep -E '^archibald_(deploy|traffic)_' || true"
    )
    found: dict[str, Any] = {"serving": [], "weights": {}, "switched": None}
    for line in out.splitlines():
        name, value = line.rsplit(" ", 1)
        labels = dict(re.findall(r'(\w+)="([^"]*)"', name))
        if name.startswith("archibald_deploy_info{") and float(value) == 1:
            found["serving"].append((labels.get("color"), labels.get("version")))
        elif name.startswith("archibald_traffic_weight_percent{"):
            found["weights"][labels.get("color")] = float(value)
        elif name.startswith("archibald_deploy_switch_timestamp_seconds"):
            found["switched"] = float(value)
    return found


def assert_markers_follow(host: Any, event: dict[str, Any], version: str) -> None:
    """The deploy markers name the colour the watchdog switched to (TargetDown watches
    it), with all the traffic, since the switch the record shows."""
    markers = deploy_markers(host)
    assert markers == {
        "serving": [(event["to"], version)],
        "weights": {event["to"]: 100.0, event["from"]: 0.0},
        "switched": float(int(at(event["at"]))),
    }, (markers, event)


def serving_or_none() -> tuple[str, str] | None:
    try:
        return serving()
    except (AssertionError, OSError, KeyError, ValueError):
        return None


class Load(threading.Thread):
    """Light load through nginx: `workers` clients in a loop, each request with a 2 s
    timeout (a request that takes longer failed its user). `gap()` is the longest
    time in which no request succeeded."""

    def __init__(self, path: str = "/api/jobs?limit=1", workers: int = 4) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.workers = workers
        self.done: list[tuple[float, bool]] = []  # (monotonic end, succeeded)
        self.stop = threading.Event()

    def client(self) -> None:
        while not self.stop.is_set():
            status, _ = probe(self.path, timeout=2.0)
            self.done.append((time.monotonic(), status == 200))
            time.sleep(0.05)

    def run(self) -> None:
        clients = [threading.Thread(target=self.client, daemon=True) for _ in range(self.workers)]
        for c in clients:
            c.start()
        for c in clients:
            c.join()

    def gap(self) -> float:
        ends = sorted(end for end, ok in self.done if ok)
        return max((b - a for a, b in itertools.pairwise(ends)), default=0.0)

    def failed(self) -> int:
        return sum(1 for _, ok in self.done if not ok)

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(15)


def watchdog_events(host: Any, event: str, since: float = 0.0) -> list[dict[str, Any]]:
    """The record's ``event`` events from ``since`` (host time) on. Counted by time, not
    by number: the history keeps its last 50 events, so an old one may drop out."""
    return [
        e
        for e in read_state(host)["history"]
        if e.get("event") == event and at(e["at"]) >= int(since)
    ]


@pytest.fixture
def known_state(host: Any) -> Iterator[tuple[str, str]]:
    """The state the part before left: (colour, version) serving, no canary, the
    watchdog running and out of its cool-down. Put back afterwards."""
    assert host.service(UNIT).is_running, f"{UNIT} does not run"
    state = read_state(host)
    assert state["canary"] is None, state["canary"]
    start = serving()
    assert start[0] == state["active"], (start, state["active"])
    last = actions(host).get("last", 0.0)
    cooldown = float(json.loads(host.file(SETTINGS).content_string)["cooldown_s"])
    wait = last + cooldown + 2 - host_now(host)
    if last and wait > 0:
        print(f"\n[watchdog] waiting {wait:.0f} s for the cool-down of its last action")
        time.sleep(wait)
    yield start
    host.run(f"docker ps -q {APP} --filter status=paused | xargs -r docker unpause")
    put_back(host, start)


def settled() -> tuple[str, str] | None:
    """What nginx serves once two answers 5 s apart agree (the watchdog may be
    switching while a failed test hands over): None if it never settles in 90 s."""

    def steady() -> tuple[str, str] | None:
        first = serving_or_none()
        time.sleep(5)
        return first if first is not None and serving_or_none() == first else None

    try:
        return wait_for("nginx to serve one version steadily", steady, 90, 0)
    except WaitTimeout:
        return None


def put_back(host: Any, start: tuple[str, str]) -> None:
    """Serve start's version again, whatever a failed test left. The watchdog may
    switch between our look and our rollback (it heals what the test broke), so
    look again after each action, three times at most."""
    for _ in range(3):
        if settled() == start:
            return
        state = read_state(host)
        if state["colors"][other(state["active"])].get("version") == start[1]:
            rc, out, _ = run_playbook("rollback.yml", "-e", "app_force=true")
        else:
            rc, out, _ = run_playbook("release.yml", "-e", f"app_version={start[1]}")
        assert rc == 0, out[-3000:]
    assert serving()[1] == start[1]


def test_a_hung_live_backend_is_healed_within_15_s(host: Any, known_state: tuple) -> None:
    start_color, start_version = known_state
    version = next(v for v in VERSIONS if v != start_version)
    rc, out, _ = run_playbook("release.yml", "-e", f"app_version={version}", "-e", "app_force=true")
    assert rc == 0, out[-3000:]
    live = other(start_color)
    assert serving() == (live, version)
    before = actions(host)
    started = host_now(host)
    since = host.check_output("date -u +'%Y-%m-%d %H:%M:%S'")
    with Load() as load:
        time.sleep(3)
        with faults.frozen(faults.docker_exec(HOST_CONTAINER), [f"archibald-backend-{live}"]):
            paused = time.monotonic()
            wait_for(
                f"nginx to serve {start_color} again",
                lambda: serving_or_none() == (start_color, start_version),
                REACTION_S + 15,
                0.2,
            )
            healed = time.monotonic() - paused
            time.sleep(3)
    gap = load.gap()
    after = actions(host)
    print(
        f"\n[watchdog] backend of {live} frozen: nginx served {start_color} again after "
        f"{healed:.1f} s; the longest time without a served request: {gap:.1f} s "
        f"({load.failed()} of {len(load.done)} requests failed or took over 2 s); "
        f"switches counted {before.get('switch')} -> {after.get('switch')}"
    )
    assert healed <= REACTION_S and gap <= REACTION_S
    events = watchdog_events(host, "watchdog_switch", started)
    assert len(events) == 1, events
    assert (events[-1]["from"], events[-1]["to"]) == (live, start_color), events[-1]
    assert read_state(host)["active"] == start_color
    assert_markers_follow(host, events[-1], start_version)
    assert after.get("switch", 0) == before.get("switch", 0) + 1, (before, after)
    journal = host.check_output(f"journalctl -u {UNIT} --since '{since}' --no-pager -o cat")
    assert '"event": "watchdog_switch"' in journal, journal[-2000:]
    rc, out, _ = run_playbook("status.yml")
    assert rc == 0 and "watchdog: active" in out and " switch, " in out, out[-3000:]


def test_a_crash_looping_live_colour_is_healed_within_15_s(host: Any, known_state: tuple) -> None:
    """bad-crashloop passes its gate, then crashes 40 s after each start; Docker restarts
    it (its RestartCount rises): the watchdog moves traffic back to the warm colour."""
    start_color, start_version = known_state
    was_bad = "bad-crashloop" in read_state(host)["bad_versions"]
    before = actions(host)
    started = host_now(host)
    with Load() as load:
        rc, out, _ = run_playbook(
            "release.yml", "-e", "app_version=bad-crashloop", "-e", "app_force=true"
        )
        assert rc == 0, out[-3000:]
        live = other(start_color)
        # The release went live (rc 0: its gate passed and it switched). Beside
        # other hosts it may take longer than the 40 s to the first crash (CI
        # saw 73 s): then the backend may be down right now (nginx answers 502,
        # None here) or the watchdog has moved traffic back already. The watchdog
        # writes its record after it has seen nginx answer from the warm colour
        # (CI once looked in between), so the record is awaited below.
        now = serving_or_none()
        assert now in ((live, "bad-crashloop"), None, (start_color, start_version)), (
            f"after the release {now} serves"
        )
        wait_for(
            "the watchdog's switch in the record",
            lambda: watchdog_events(host, "watchdog_switch", started),
            40 + REACTION_S + 30,
            0.5,
        )
        time.sleep(3)
    switched = watchdog_events(host, "watchdog_switch", started)
    assert len(switched) == 1, switched
    event = switched[-1]
    ids = " ".join(
        host.check_output(f"docker ps -aq {APP} --filter label=org.archibald.color={live}").split()
    )
    docs = json.loads(host.check_output(f"docker inspect {ids}"))
    # A container Docker restarted started last right after its crash.
    restarted = [d for d in docs if d["RestartCount"] > 0]
    assert restarted, f"no container of {live} was restarted by Docker: {docs}"
    crashed_at = min(at(d["State"]["StartedAt"]) for d in restarted)
    healed = at(event["at"]) - crashed_at
    after = actions(host)
    print(
        f"\n[watchdog] {live} crash-loops: traffic back on {start_color} {healed:.0f} s after "
        f"Docker restarted the first crashed container (record: {event.get('reason')}); "
        f"the longest time without a served request: {load.gap():.1f} s"
    )
    try:
        assert (event["from"], event["to"]) == (live, start_color), event
        assert serving() == (start_color, start_version)
        assert_markers_follow(host, event, start_version)
        assert healed <= REACTION_S, healed
        assert load.gap() <= REACTION_S
        assert after.get("switch", 0) == before.get("switch", 0) + 1, (before, after)
    finally:
        # The crash-looping colour is kept for its window; stop it now, and list the
        # version as bad so that no rollback goes there (unless it was listed before).
        host.run(
            f"docker ps -q {APP} --filter label=org.archibald.color={live} | xargs -r docker stop"
        )
        if not was_bad:
            rc, out, _ = run_playbook("mark-bad.yml", "-e", "app_version=bad-crashloop")
            assert rc == 0, out[-2000:]
