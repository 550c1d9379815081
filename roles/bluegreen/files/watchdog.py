#!/usr/bin/python3
# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host's watchdog: heal the live colour between releases, without CI.

Run by the role's <app>-watchdog.service with its settings file (JSON, written
by the role) as the one argument. Every ``interval_s`` it asks each service of
the live colour for ``/health`` on its own loopback port (``timeout_s`` each,
all at once) and reads the colour's containers from the Docker socket. A probe
fails when a service does not answer 200 in time (a hung colour answers
nothing, a crash-looping one refuses connections) or a container is not
running; a container whose RestartCount rose in the last ``failures`` probes
counts too. After ``failures`` failed probes in a row, or such a restart, it
acts under the release lock, with a token of its own:

* the warm colour runs, answers healthy with its recorded version, and that
  version is not marked bad: traffic moves there with the switch a release
  makes (the colour's upstream file written by the role, ``nginx -t``, reload,
  verified through nginx), recorded as ``watchdog_switch``, with Prometheus'
  deploy markers rewritten (the role's text, bluegreen.render_markers) so that
  they name the colour that serves; the failed colour keeps its rollback window,
  then the retirement timer stops it;
* otherwise: ``docker restart`` of the live colour's failing containers,
  recorded as ``watchdog_restart``.

It never acts while another run holds the release lock (it stands back and
looks again at the next probe), during a canary, in maintenance mode, when the
record shows no warm colour, or when nginx's upstream file and the record
disagree (that is for playbooks/repair.yml). After an action it waits
``cooldown_s`` before it acts again. Each action is a JSON line in the journal,
a counter for Prometheus (node exporter's textfile collector) and a line of
``watchdog.json`` in the app's directory, which playbooks/status.yml prints.
At its start it also rewrites the deploy markers from the record when they do
not match it (their switch time is the record's last move, never the clock's).

With ``--observe <settings.json>`` it looks once and prints what it saw as JSON
(bluegreen.observe: record, lock without its token, nginx's marker and answer,
containers, drift), changing nothing: the one command the CD plan job's
read-only key may run (tasks/observer.yml, scripts/cd-plan.py).

The record's format, the lock and the switch belong to bluegreen.py, installed
beside it from the repository's module_utils/ (PYTHONPATH in the unit).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import bluegreen as core

STATUS_FILE = "watchdog.json"
SWITCH, RESTART = "switch", "restart"
ACTIONS = (SWITCH, RESTART)
# What the verification through nginx asks for, as a release's move does.
VERIFY_CONSECUTIVE = 3
VERIFY_INTERVAL_S = 0.2


@dataclass(frozen=True)
class Settings:
    """The settings file the role writes (templates/watchdog.json.j2)."""

    app: str
    dir: str
    colors: list[str]
    services: list[str]
    ports: dict[str, dict[str, int]]
    health_path: str
    upstreams_file: str
    maintenance_flag: str
    edge_url: str
    edge_host: str
    edge_validate_certs: bool
    textfile: str
    # Prometheus' deploy markers, the role's too (bluegreen.render_markers).
    markers_file: str
    interval_s: float = 2.0
    timeout_s: float = 2.0
    failures: int = 3
    cooldown_s: float = 60.0
    startup_grace_s: float = 60.0
    stop_grace_s: int = 75
    rollback_window_s: int = 300
    verify_timeout_s: float = 10.0
    docker_socket: str = "/var/run/docker.sock"
    test_command: list[str] = field(default_factory=lambda: ["nginx", "-t"])
    reload_command: list[str] = field(default_factory=lambda: ["systemctl", "reload", "nginx"])

    @property
    def owner(self) -> str:
        return f"{self.app}-watchdog on the host"

    @property
    def lock_ttl_s(self) -> int:
        # Long enough to restart every container of a colour, then some.
        return int(self.stop_grace_s) * len(self.services) + 60


def load_settings(text: str, path: str) -> Settings:
    try:
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(Settings)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown settings {unknown}")
        settings = Settings(**raw)
        core.check_colors(settings.colors)
    except (ValueError, TypeError, core.BlueGreenError) as exc:
        raise core.BlueGreenError(
            f"the watchdog's settings {path} cannot be used ({exc}); provision the host again "
            f"(playbooks/provision.yml), which writes them"
        ) from exc
    if settings.failures < 1 or settings.interval_s <= 0 or settings.timeout_s <= 0:
        raise core.BlueGreenError(
            f"the watchdog's settings {path} need failures >= 1 and interval_s, timeout_s > 0; "
            f"fix bluegreen_watchdog_* and provision again"
        )
    return settings


# --- the decision, pure ----------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One probe of the host: the live colour and what failed (nothing: healthy)."""

    live: str | None
    version: str | None
    hold: str | None = None
    failures: tuple[str, ...] = ()
    # RestartCount per container of the live colour; None when Docker did not answer.
    restarts: Mapping[str, int] | None = None


@dataclass(frozen=True)
class Memory:
    """What the watchdog carries from one probe to the next."""

    started: float
    live: tuple[str | None, str | None] = (None, None)
    failures: int = 0
    restarts: Mapping[str, int] = field(default_factory=dict)
    # Probes since a container's RestartCount rose (None: none in sight), and which.
    rose_ago: int | None = None
    rose: tuple[str, ...] = ()
    armed: bool = False
    acted_at: float | None = None
    hold: str | None = None


@dataclass(frozen=True)
class Verdict:
    """ok, failing (not yet enough), waiting (not armed yet), hold, cooling, act."""

    kind: str
    why: str = ""


def assess(memory: Memory, seen: Seen, now: float, settings: Settings) -> tuple[Memory, Verdict]:
    """Count this probe into the memory and say whether to act.

    The watchdog is armed once the live colour answered healthy (or after the
    startup grace): a host that boots does not count its colours coming up.
    """
    if seen.hold is not None:
        return dataclasses.replace(memory, failures=0, rose_ago=None, rose=(), hold=seen.hold), (
            Verdict("hold", seen.hold)
        )
    key = (seen.live, seen.version)
    if key != memory.live:  # a release or a switch changed the live colour: start over
        memory = dataclasses.replace(
            memory, live=key, failures=0, restarts=dict(seen.restarts or {}), rose_ago=None, rose=()
        )
    rose = tuple(
        sorted(
            name
            for name, count in (seen.restarts or {}).items()
            if name in memory.restarts and count > memory.restarts[name]
        )
    )
    rose_ago = 0 if rose else (None if memory.rose_ago is None else memory.rose_ago + 1)
    if rose_ago is not None and rose_ago >= settings.failures:
        rose_ago = None
    memory = dataclasses.replace(
        memory,
        failures=memory.failures + 1 if seen.failures else 0,
        restarts=dict(seen.restarts) if seen.restarts is not None else memory.restarts,
        rose_ago=rose_ago,
        rose=rose or (memory.rose if rose_ago is not None else ()),
        armed=memory.armed or not seen.failures or now - memory.started >= settings.startup_grace_s,
        hold=None,
    )
    if not memory.armed:  # what failed before it was armed is not counted
        memory = dataclasses.replace(memory, failures=0, rose_ago=None, rose=())
        return memory, Verdict("waiting", "the live colour has not answered healthy yet")
    reasons = []
    if memory.failures >= settings.failures:
        reasons.append(
            f"{memory.failures} failed probes of {seen.live} in a row ({'; '.join(seen.failures)})"
        )
    if memory.rose_ago is not None:
        reasons.append(f"{', '.join(memory.rose)} restarted by Docker")
    if not reasons:
        if seen.failures:
            return memory, Verdict(
                "failing",
                f"probe {memory.failures} of {settings.failures} failed: "
                + "; ".join(seen.failures),
            )
        return memory, Verdict("ok")
    if memory.acted_at is not None and now - memory.acted_at < settings.cooldown_s:
        left = settings.cooldown_s - (now - memory.acted_at)
        return memory, Verdict("cooling", f"{'; '.join(reasons)}; cooling down {left:.0f} s more")
    return memory, Verdict("act", "; ".join(reasons))


def after_action(memory: Memory, now: float, outcome: str) -> Memory:
    """The memory after an action: switch, restart and failed start the cool-down."""
    if outcome not in (*ACTIONS, "failed"):
        return memory  # stood back or held: look again at the next probe
    return dataclasses.replace(memory, acted_at=now, failures=0, rose_ago=None, rose=())


def hold_reason(
    state: Mapping[str, Any] | None,
    maintenance: bool,
    marker: Mapping[str, Any] | None,
    colors: Sequence[str],
) -> str | None:
    """Why the watchdog must not act on this host now (None: it may)."""
    if state is None:
        return "the record cannot be read"
    active = state.get("active")
    if active is None:
        return "no release is recorded"
    if state.get("canary"):
        return core.describe_canary(state["canary"])
    if maintenance:
        return "maintenance mode is on"
    warm = core.other(active, colors)
    if not (state["colors"].get(warm) or {}).get("version"):
        return f"the record shows no warm colour ({warm} has never run a version)"
    if marker is not None and marker.get("color") != active:
        return (
            f"nginx's upstream file points at {marker.get('color')} but the record says {active}: "
            f"run playbooks/repair.yml"
        )
    return None


def choose(
    state: Mapping[str, Any], warm_failures: Sequence[str], colors: Sequence[str]
) -> Verdict:
    """Switch to the warm colour when it is healthy and not marked bad; else restart."""
    warm = core.other(str(state["active"]), colors)
    version = state["colors"][warm].get("version")
    bad = (state.get("bad_versions") or {}).get(version)
    if bad is not None:
        return Verdict(
            RESTART, f"the warm colour {warm} runs {version}, marked bad ({bad.get('reason')})"
        )
    if warm_failures:
        return Verdict(
            RESTART, f"the warm colour {warm} is not healthy: {'; '.join(warm_failures)}"
        )
    return Verdict(SWITCH, f"the warm colour {warm} ({version}) is healthy")


def tick(
    memory: Memory,
    now: float,
    observe: Callable[[], Seen],
    act: Callable[[Seen, str], tuple[str, str]],
    settings: Settings,
    log: Callable[..., None],
) -> Memory:
    """One probe: observe, assess, maybe act; log what changed. ``act`` returns (outcome, why)."""
    seen = observe()
    before = memory
    memory, verdict = assess(memory, seen, now, settings)
    if verdict.kind == "hold" and before.hold != verdict.why:
        log("watchdog_hold", reason=verdict.why)
    elif verdict.kind == "failing":
        log("watchdog_probe_failed", color=seen.live, version=seen.version, reason=verdict.why)
    elif verdict.kind == "ok" and before.failures:
        log("watchdog_recovered", color=seen.live, version=seen.version, after=before.failures)
    elif verdict.kind == "cooling":
        log("watchdog_cooling", color=seen.live, reason=verdict.why)
    elif verdict.kind == "act":
        outcome, _ = act(seen, verdict.why)
        memory = after_action(memory, now, outcome)
    return memory


# --- the host --------------------------------------------------------------


def log_json(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


def run_command(argv: list[str]) -> tuple[int, str, str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    return result.returncode, result.stdout, result.stderr


Fetch = Callable[..., tuple[int | None, str, str | None]]


def fetch(
    url: str,
    request_timeout: float,
    headers: Mapping[str, str] | None = None,
    validate_certs: bool = True,
) -> tuple[int | None, str, str | None]:
    """GET a URL; return (status, body, transport error); HTTP errors are answers too.

    The modules ask URLs through Ansible's client (module_utils/httpfetch.py); this
    program runs on the host without Ansible, so it has this one standard-library GET."""
    request = urllib.request.Request(url, headers=dict(headers or {}), method="GET")
    context = None
    if url.lower().startswith("https:") and not validate_certs:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=request_timeout, context=context) as reply:
            return reply.status, reply.read(64 * 1024).decode("utf-8", "replace"), None
    except urllib.error.HTTPError as exc:
        body = exc.read(64 * 1024).decode("utf-8", "replace") if exc.fp else ""
        return exc.code, body, None
    except urllib.error.URLError as exc:
        return None, "", f"no answer: {exc.reason}"
    except (TimeoutError, OSError) as exc:
        return None, "", f"no answer: {exc or type(exc).__name__}"


Containers = Callable[[str], list[dict[str, Any]]]


class Host:
    """The watchdog's view of and hands on the host; every effect is injected for the tests."""

    def __init__(
        self,
        settings: Settings,
        *,
        fetch: Fetch = fetch,
        containers: Containers | None = None,
        command: core.Runner = run_command,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[..., None] = log_json,
    ) -> None:
        self.settings = settings
        self.fetch = fetch
        self.containers = containers or (
            lambda color: core.docker_containers(
                settings.docker_socket, settings.app, color, settings.timeout_s
            )
        )
        self.command = command
        self.wall = wall
        self.sleep = sleep
        self.log = log
        self.files = core.paths(settings.dir, settings.colors)
        self.status_path = os.path.join(settings.dir, STATUS_FILE)
        self.status = self.read_status()

    # -- reading ---------------------------------------------------------------

    def read_state(self) -> dict[str, Any] | None:
        s = self.settings
        try:
            return core.load_state(
                core.read_text(self.files["state"]), self.files["state"], s.app, s.colors
            )
        except core.BlueGreenError:
            return None

    def read_hold(self, state: Mapping[str, Any] | None) -> str | None:
        s = self.settings
        try:
            marker = core.parse_marker(core.read_text(s.upstreams_file))
        except core.BlueGreenError as exc:
            return str(exc)
        return hold_reason(state, os.path.exists(s.maintenance_flag), marker, s.colors)

    def probe(self, color: str, version: str | None = None) -> tuple[str, ...]:
        """What fails on the colour's own ports (empty: every service answers 200)."""
        s = self.settings

        def one(service: str) -> str | None:
            url = f"http://127.0.0.1:{s.ports[color][service]}{s.health_path}"
            status, body, error = self.fetch(url, s.timeout_s)
            if status != 200:
                return f"{service}: {error or f'HTTP {status}'}"
            if version is not None:
                answer = core.edge_answer(status, body, error)
                if (answer["color"], answer["version"]) != (color, version):
                    return (
                        f"{service}: answers {answer['color']} {answer['version']}, "
                        f"expected {color} {version}"
                    )
            return None

        with ThreadPoolExecutor(max_workers=len(s.services)) as pool:
            found = list(pool.map(one, s.services))
        return tuple(f for f in found if f)

    def look_at_containers(self, color: str) -> tuple[dict[str, int] | None, tuple[str, ...]]:
        """(RestartCount by container, what is wrong with them); (None, ()) when Docker is away."""
        try:
            facts = self.containers(color)
        except (OSError, ValueError, KeyError) as exc:
            self.log("watchdog_docker_unreadable", reason=str(exc))
            return None, ()
        by_service = {f.get("service"): f for f in facts}
        wrong = []
        for service in self.settings.services:
            fact = by_service.get(service)
            if fact is None:
                wrong.append(f"{service}: no container")
            elif fact.get("restarting"):
                wrong.append(f"{service}: {fact['name']} is restarting")
            elif not fact.get("running"):
                wrong.append(
                    f"{service}: {fact['name']} is not running (exit code {fact.get('exit_code')})"
                )
        counts = {str(f["name"]): int(f.get("restart_count") or 0) for f in facts}
        return counts, tuple(wrong)

    def observe(self) -> Seen:
        state = self.read_state()
        hold = self.read_hold(state)
        if hold is not None or state is None:
            return Seen(live=None, version=None, hold=hold or "the record cannot be read")
        live = str(state["active"])
        version = state["colors"][live].get("version")
        with ThreadPoolExecutor(max_workers=2) as pool:
            answers = pool.submit(self.probe, live)
            docker = pool.submit(self.look_at_containers, live)
            failures = answers.result()
            restarts, wrong = docker.result()
        self.update(live=live, version=version, healthy=not (failures or wrong), hold=None)
        return Seen(live, version, None, failures + wrong, restarts)

    # -- acting ----------------------------------------------------------------

    def take_lock(self) -> tuple[str | None, str]:
        """(this run's token, "") or (None, who holds the lock)."""
        s = self.settings
        try:
            with core.directory_lock(s.dir):
                current = core.parse_lock(core.read_text(self.files["lock"]))
                _, lock, _ = core.plan_acquire(
                    self.files["lock"], current, s.owner, s.lock_ttl_s, self.wall()
                )
                core.write_json_durably(self.files["lock"], lock)
        except core.LockError as exc:
            return None, str(exc).split(";")[0]
        return str(lock["token"]), ""

    def give_lock_back(self, token: str) -> None:
        with core.directory_lock(self.settings.dir):
            current = core.parse_lock(core.read_text(self.files["lock"]))
            action, _ = core.plan_release(self.files["lock"], current, token, False, self.wall())
            if action == "released" and current and current.get("token") == token:
                os.unlink(self.files["lock"])

    def act(self, seen: Seen, reason: str) -> tuple[str, str]:
        """Move traffic to the warm colour or restart the live one, under the release lock."""
        token, holder = self.take_lock()
        if token is None:
            self.log("watchdog_stood_back", color=seen.live, reason=reason, lock=holder)
            return "stood_back", holder
        try:
            state = self.read_state()
            hold = self.read_hold(state)
            if hold is None and state is not None and state["active"] != seen.live:
                hold = f"the live colour changed to {state['active']} since the probe"
            if hold is not None or state is None:
                self.log("watchdog_hold", reason=hold, color=seen.live)
                return "held", str(hold)
            warm = core.other(str(state["active"]), self.settings.colors)
            warm_version = state["colors"][warm].get("version")
            _, wrong = self.look_at_containers(warm)
            plan = choose(state, wrong + self.probe(warm, warm_version), self.settings.colors)
            if plan.kind == SWITCH:
                failed = self.switch(token, state, warm, reason)
                if failed is None:
                    return SWITCH, plan.why
                plan = Verdict(RESTART, failed)
            return self.restart(token, state, seen, reason, plan.why)
        finally:
            self.give_lock_back(token)

    def switch(self, token: str, state: dict[str, Any], warm: str, reason: str) -> str | None:
        """Point nginx at ``warm`` like a release, verify, record; None, or why it failed."""
        s = self.settings
        live = str(state["active"])
        record = state["colors"][warm]
        content = core.read_text(core.watchdog_blocks_path(s.dir, warm))
        if content is None:
            return f"no upstream file for {warm} in {s.dir}: provision the host again"
        previous = core.read_text(s.upstreams_file)
        wanted = core.upstream_text(warm, record["version"], record.get("digest"), content)
        switch: dict[str, Any] = {
            "now": self.wall,
            "command": self.command,
            "test_command": s.test_command,
            "reload_command": s.reload_command,
            "lease_s": s.lock_ttl_s,
        }
        try:
            core.switch_upstreams(
                s.dir,
                token,
                s.upstreams_file,
                wanted,
                color=warm,
                version=record["version"],
                **switch,
            )
        except (core.BlueGreenError, OSError) as exc:
            self.log("watchdog_switch_failed", to=warm, reason=str(exc))
            return f"the switch to {warm} failed: {exc}"
        answer = self.verify(warm, record["version"])
        if answer is not None:
            why = f"nginx did not answer from {warm} after the switch ({answer})"
            if previous is not None:
                try:
                    core.switch_upstreams(
                        s.dir,
                        token,
                        s.upstreams_file,
                        previous,
                        color=live,
                        version=str(state["colors"][live].get("version")),
                        reload=True,
                        **switch,
                    )
                except (core.BlueGreenError, OSError) as exc:
                    why += f"; putting {live} back failed too: {exc}"
            self.log("watchdog_switch_failed", to=warm, reason=why)
            return why
        at = self.wall()
        with core.fenced(s.dir, token, self.wall, s.lock_ttl_s):
            new, event = core.apply_action(
                state,
                {
                    "action": "switch",
                    "color": warm,
                    "record": {"version": record["version"]},
                    "event": "watchdog_switch",
                    "by": s.owner,
                    "colors": s.colors,
                },
                at,
            )
            if event is not None:
                new["history"][-1] = {**new["history"][-1], "reason": reason}
            core.write_durably(self.files["state"], core.render_state(new))
            self.write_markers(new)
            core.write_json_durably(
                self.files["retire"][live],
                core.retirement(live, at, s.rollback_window_s, s.owner),
            )
        self.log(
            "watchdog_switch",
            **{"from": live},
            to=warm,
            version=record["version"],
            reason=reason,
            by=s.owner,
        )
        self.record_action(SWITCH, f"{live} -> {warm} ({record['version']}): {reason}")
        return None

    def verify(self, color: str, version: str) -> str | None:
        """None once nginx answered from ``color`` ``version`` a few times in a row."""
        s = self.settings
        deadline = time.monotonic() + s.verify_timeout_s
        in_a_row, last = 0, "no answer yet"
        while time.monotonic() < deadline:
            answer = core.edge_answer(
                *self.fetch(
                    s.edge_url + s.health_path,
                    s.timeout_s,
                    {"Host": s.edge_host},
                    s.edge_validate_certs,
                )
            )
            if (answer["color"], answer["version"]) == (color, version):
                in_a_row += 1
                if in_a_row >= VERIFY_CONSECUTIVE:
                    return None
            else:
                in_a_row, last = 0, answer["error"] or f"{answer['color']} {answer['version']}"
            self.sleep(VERIFY_INTERVAL_S)
        return last

    def restart(
        self, token: str, state: dict[str, Any], seen: Seen, reason: str, why: str
    ) -> tuple[str, str]:
        s = self.settings
        live = str(state["active"])
        try:
            facts = self.containers(live)
        except (OSError, ValueError, KeyError) as exc:
            facts = []
            self.log("watchdog_docker_unreadable", reason=str(exc))
        failing = {f.split(":", 1)[0] for f in seen.failures}
        names = sorted(str(f["name"]) for f in facts)
        # The failing services' containers; all of the colour's after a restart by Docker.
        targets = sorted(str(f["name"]) for f in facts if f.get("service") in failing) or names
        if not targets:
            self.log(
                "watchdog_restart_failed", color=live, reason="no container of the colour found"
            )
            self.record_action("failed", f"no container of {live} to restart: {reason}")
            return "failed", "no container to restart"
        with core.fenced(s.dir, token, self.wall, s.lock_ttl_s):
            pass  # raises LockLost unless the lock is still ours: nothing restarted then
        rc, out, err = self.command(["docker", "restart", "-t", str(s.stop_grace_s), *targets])
        ok = rc == 0
        at = self.wall()
        with core.fenced(s.dir, token, self.wall, s.lock_ttl_s):
            fresh = self.read_state() or state
            event = {
                "at": core.iso(at),
                "event": "watchdog_restart",
                "color": live,
                "version": state["colors"][live].get("version"),
                "containers": targets,
                "reason": f"{reason}; {why}",
                "ok": ok,
                "by": s.owner,
            }
            fresh = core.append_event(fresh, event)
            core.write_durably(self.files["state"], core.render_state(fresh))
            self.write_markers(fresh)  # no move of traffic: the switch time stays
        self.log(
            "watchdog_restart" if ok else "watchdog_restart_failed",
            color=live,
            containers=targets,
            reason=reason,
            why=why,
            stderr=(err or out).strip()[-300:],
        )
        self.record_action(RESTART, f"restarted {', '.join(targets)}: {reason}; {why}")
        return (RESTART if ok else "failed"), why

    # -- status and metrics -----------------------------------------------------

    def write_markers(self, state: Mapping[str, Any]) -> None:
        """Prometheus' deploy markers for ``state``, the role's text (bluegreen.render_markers).

        The caller holds the directory's flock. Written only when the text changes; a
        failure is logged and changes nothing else: traffic and the record stay as they are.
        """
        s = self.settings
        wanted = core.render_markers(s.app, s.colors, state, self.wall())
        try:
            if core.read_text(s.markers_file) != wanted:
                core.write_durably(s.markers_file, wanted)
        except (core.BlueGreenError, OSError) as exc:
            self.log("watchdog_markers_failed", path=s.markers_file, reason=str(exc))

    def sync_markers(self) -> None:
        """At the start: the deploy markers from the record as it stands (a switch whose
        markers were not written). Under the directory's flock, so a release writing the
        record and its markers comes before or after, never between."""
        with core.directory_lock(self.settings.dir):
            state = self.read_state()
            if state is not None and state.get("active"):
                self.write_markers(state)

    def read_status(self) -> dict[str, Any]:
        try:
            found = json.loads(core.read_text(self.status_path) or "{}")
        except (ValueError, core.BlueGreenError):
            found = {}
        counts = found.get("actions") if isinstance(found.get("actions"), dict) else {}
        return {
            "live": None,
            "version": None,
            "healthy": None,
            "hold": None,
            "last_action": found.get("last_action"),
            "actions": {a: int(counts.get(a) or 0) for a in ACTIONS},
        }

    def update(self, **changes: Any) -> None:
        """Write watchdog.json and the metrics when what they say changed."""
        new = {**self.status, **changes}
        if new != self.status or not os.path.exists(self.status_path):
            self.status = new
            self.write_status()

    def record_action(self, action: str, what: str) -> None:
        actions = dict(self.status["actions"])
        if action in actions:
            actions[action] += 1
        at = self.wall()
        self.update(
            actions=actions,
            last_action={
                "at": core.iso(at),
                "epoch": int(at.timestamp()),
                "action": action,
                "what": what,
            },
        )

    def write_status(self) -> None:
        s = self.settings
        core.write_json_durably(
            self.status_path, {**self.status, "updated_at": core.iso(self.wall())}
        )
        if os.path.isdir(os.path.dirname(s.textfile)):
            core.write_durably(s.textfile, render_metrics(s.app, self.status))


def render_metrics(app: str, status: Mapping[str, Any]) -> str:
    """node exporter's textfile: counters by action, the last action's time, the live health."""
    label = f'app="{app}"'
    last = (status.get("last_action") or {}).get("epoch") or 0
    lines = [
        "# HELP archibald_watchdog_actions_total Actions of the host's watchdog: traffic moved "
        "to the warm colour (switch) or the live colour's containers restarted (restart).",
        "# TYPE archibald_watchdog_actions_total counter",
        *(
            f'archibald_watchdog_actions_total{{{label},action="{a}"}} {status["actions"][a]}'
            for a in ACTIONS
        ),
        "# HELP archibald_watchdog_last_action_timestamp_seconds When the watchdog last acted "
        "(0: never).",
        "# TYPE archibald_watchdog_last_action_timestamp_seconds gauge",
        f"archibald_watchdog_last_action_timestamp_seconds{{{label}}} {last}",
        "# HELP archibald_watchdog_live_healthy Whether the live colour answered its last probe "
        "(1), failed it (0); absent while the watchdog holds back.",
        "# TYPE archibald_watchdog_live_healthy gauge",
    ]
    if status.get("healthy") is not None and status.get("hold") is None:
        lines.append(
            f'archibald_watchdog_live_healthy{{{label},color="{status.get("live")}"}} '
            f"{int(bool(status['healthy']))}"
        )
    return "\n".join(lines) + "\n"


# --- the read-only observer ---------------------------------------------------


def observed(
    settings: Settings,
    now: datetime,
    fetch: Fetch = fetch,
    containers: Callable[[], list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """What the read-only observer prints: the host as the engine sees it
    (bluegreen.observe, the facts a plan is made from) and nothing that could act
    on it: the release lock without its token, no plan (the reader makes its own
    with bluegreen.plan, scripts/cd-plan.py)."""
    listed = (
        containers()
        if containers is not None
        else core.docker_listed(settings.docker_socket, settings.app, settings.timeout_s)
    )
    facts = core.observe(
        {
            "dir": settings.dir,
            "app": settings.app,
            "colors": settings.colors,
            "services": settings.services,
            "upstreams_file": settings.upstreams_file,
            "edge_url": settings.edge_url,
            "edge_host": settings.edge_host,
            "edge_validate_certs": settings.edge_validate_certs,
            "health_path": settings.health_path,
            "request_timeout": max(settings.timeout_s, 5.0),
            "containers": listed,
        },
        now,
        fetch,
    )
    facts.pop("plan", None)
    if facts.get("lock"):
        facts["lock"] = {k: v for k, v in facts["lock"].items() if k != "token"}
    return {
        "observed_at": core.iso(now),
        "app": settings.app,
        "colors_order": list(settings.colors),
        "services": list(settings.services),
        "maintenance": os.path.exists(settings.maintenance_flag),
        **facts,
    }


def observe_main(settings_path: str) -> int:
    """``watchdog.py --observe <settings.json>``: the facts as one JSON document on
    stdout, exit 0; a host that cannot be read: the reason on stderr, exit 1. The
    command an observer key's authorized_keys entry forces (tasks/observer.yml)."""
    try:
        settings = load_settings(core.read_text(settings_path) or "", settings_path)
        facts = observed(settings, datetime.now(UTC))
    except (core.BlueGreenError, OSError, ValueError) as exc:
        print(f"archibald observer: cannot read the host: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(facts, indent=2, sort_keys=True))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[1] == "--observe":
        return observe_main(argv[2])
    if len(argv) != 2 or argv[1].startswith("-"):
        print(f"usage: {argv[0]} <settings.json> | --observe <settings.json>", file=sys.stderr)
        return 2
    try:
        settings = load_settings(core.read_text(argv[1]) or "", argv[1])
    except core.BlueGreenError as exc:
        log_json("watchdog_refused", reason=str(exc))
        return 1
    host = Host(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    memory = Memory(started=time.monotonic())
    host.update()
    try:
        host.sync_markers()
    except (core.BlueGreenError, OSError) as exc:
        log_json("watchdog_markers_failed", path=settings.markers_file, reason=str(exc))
    log_json(
        "watchdog_started",
        app=settings.app,
        interval_s=settings.interval_s,
        failures=settings.failures,
        cooldown_s=settings.cooldown_s,
    )
    while not stop.is_set():
        began = time.monotonic()
        try:
            memory = tick(memory, began, host.observe, host.act, settings, host.log)
        except (core.BlueGreenError, OSError) as exc:
            log_json("watchdog_error", reason=str(exc))
        stop.wait(max(0.0, settings.interval_s - (time.monotonic() - began)))
    log_json("watchdog_stopped", app=settings.app)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
