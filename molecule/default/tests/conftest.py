"""Helpers for the whole-stack tests: run playbooks, read state, talk to nginx."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
# The tests use the harness's load client (harness/postload.py) and its way of
# running playbooks (harness/playbook.py).
sys.path.insert(0, str(ROOT))
from harness import playbook, wait  # noqa: E402

# The scenario's platform and the port its nginx is published on (molecule.yml;
# harness/scenarios.py sets both for the other hosts run at once).
EDGE = f"https://127.0.0.1:{os.environ.get('ARCHIBALD_STACK_PORT', '18443')}"
HOST_CONTAINER = os.environ.get("ARCHIBALD_STACK_HOST", "default-deb12")
# The scenario's host variables (every slot's host has the same file), and the
# preview token they set (a test value, not a secret).
HOST_VARS = Path(__file__).resolve().parents[1] / "host_vars" / "default-deb12.yml"
PREVIEW_TOKEN = str(yaml.safe_load(HOST_VARS.read_text())["bluegreen_preview_token"])
STATE_DIR = "/var/lib/archibald/archibald"
STATE = f"{STATE_DIR}/state.json"
LOCK = f"{STATE_DIR}/release.lock"
# The app's good versions (harness/testbed.py builds them) and the one every
# test file starts from (the known state below).
VERSIONS = ("v1", "v2", "v3")
START_VERSION = "v1"
MAINTENANCE_FLAG = "/etc/nginx/archibald/maintenance"
# The test hosts use a self-signed certificate.
TLS = ssl.create_default_context()
TLS.check_hostname = False
TLS.verify_mode = ssl.CERT_NONE


# harness/scenarios.py runs one part of these tests on GitHub's parallel jobs
# by naming its files here (comma-separated stems); unset, every file runs.
STACK_TESTS_ENV = "ARCHIBALD_STACK_TESTS"
# "reverse" runs the files last to first: each file starts from the known state
# its fixture establishes (start_known below), not from what the file before left.
STACK_ORDER_ENV = "ARCHIBALD_STACK_ORDER"


def file_number(item: pytest.Item) -> int:
    """The number of a test file (test_12_hooks -> 12): files run in this order, or
    in the reverse one, a file's tests in their own order."""
    found = re.match(r"test_(\d+)_", Path(str(item.fspath)).stem)
    return int(found.group(1)) if found else 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Stable either way: a file's tests keep their order.
    items.sort(key=file_number, reverse=os.environ.get(STACK_ORDER_ENV) == "reverse")
    wanted = [s for s in os.environ.get(STACK_TESTS_ENV, "").split(",") if s.strip()]
    if not wanted:
        return
    present = {Path(str(item.fspath)).stem for item in items}
    unknown = sorted(set(wanted) - present)
    if unknown:
        raise pytest.UsageError(
            f"{STACK_TESTS_ENV} names {unknown}, which are not test files here "
            f"(have {sorted(present)}); see STACK_PARTS in harness/scenarios.py"
        )
    keep = [item for item in items if Path(str(item.fspath)).stem in wanted]
    dropped = [item for item in items if item not in keep]
    config.hook.pytest_deselected(items=dropped)
    items[:] = keep
    others = sorted(present - set(wanted))
    print(
        f"\n[parts] {STACK_TESTS_ENV}: running {', '.join(wanted)}; not run in this job: "
        f"{', '.join(others)} (each part is its own job on GitHub; `make test` runs them all)"
    )


def run_playbook(name: str, *extra: str) -> tuple[int, str, float]:
    """Run a playbook against the scenario host; return (rc, output on one line, seconds)."""
    rc, output, elapsed = playbook.run(name, *extra, timeout=600)
    return rc, flat(output), elapsed


def start_playbook(name: str, *extra: str) -> playbook.Background:
    """Run a playbook in the background, in its own process group (killable as a whole)."""
    return playbook.start(name, *extra)


def other(color: str) -> str:
    """The colour that is not `color`."""
    return "green" if color == "blue" else "blue"


def on_host(command: str) -> subprocess.CompletedProcess[str]:
    """A shell command on the scenario's host (docker exec), for fixtures that do
    not take testinfra's per-host `host` (which would parametrise every test)."""
    return subprocess.run(
        ["docker", "exec", HOST_CONTAINER, "sh", "-c", command],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def host_state() -> dict[str, Any]:
    done = on_host(f"cat {STATE}")
    assert done.returncode == 0, f"cannot read {STATE}: {done.stderr}"
    return dict(json.loads(done.stdout))


def running_containers(color: str) -> list[str]:
    """The ids of the app's running containers of `color`."""
    listed = on_host(
        "docker ps -q --filter label=org.archibald.app=archibald "
        f"--filter label=org.archibald.color={color}"
    )
    return listed.stdout.split()


def standby_of(state: dict[str, Any]) -> tuple[str, str | None] | None:
    """(colour, version) of the standby colour in the record; None when no colour is live."""
    active = state.get("active")
    if not active:
        return None
    color = other(str(active))
    return color, (state.get("colors") or {}).get(color, {}).get("version")


def is_fault_image(version: str | None) -> bool:
    """The test versions built to fail (bad-unhealthy, bad-crashloop, ...)."""
    return bool(version) and str(version).startswith("bad-")


def known_state_problems(
    state: dict[str, Any], serves: tuple[str, str] | None, flag: bool, standby_running: bool
) -> list[str]:
    """What keeps the host from the known state every test file starts from:
    START_VERSION live and served, no canary, no version marked bad, no
    maintenance, and a standby colour that runs no fault image: with no version
    marked bad, the watchdog and a rollback would take it as a way back."""
    active = state.get("active")
    live = (state.get("colors") or {}).get(active or "", {}).get("version")
    standby = standby_of(state)
    problems = []
    if standby_running and standby and is_fault_image(standby[1]):
        problems.append(f"the standby colour {standby[0]} runs the fault image {standby[1]}")
    if flag:
        problems.append("maintenance mode is on")
    if state.get("canary"):
        problems.append(f"a canary is in progress: {state['canary']}")
    if state.get("bad_versions"):
        problems.append(f"versions are marked bad: {sorted(state['bad_versions'])}")
    if live != START_VERSION:
        problems.append(f"{active} is live with {live}, not {START_VERSION}")
    if serves != (active, START_VERSION):
        problems.append(f"nginx serves {serves}, not {(active, START_VERSION)}")
    return problems


def establish_known_state() -> list[str]:
    """Bring the host to the known state with the operators' own playbooks (each
    only when needed), then assert it; return what it had to do."""
    done: list[str] = []

    def step(name: str, *extra: str) -> None:
        rc, out, seconds = run_playbook(name, *extra)
        assert rc == 0, f"setting up the known state: {name} {extra} failed: {out[-3000:]}"
        done.append(f"{name} {' '.join(extra)} ({seconds:.0f} s)".replace("  ", " "))

    if on_host(f"test -e {MAINTENANCE_FLAG}").returncode == 0:
        step("maintenance.yml", "-e", "maintenance=off")
    # Before any version is unmarked: a fault image left on the standby colour
    # (test_14's crash loop) is stopped, as an operator would, so that nothing
    # switches back to it once it is no longer listed bad.
    standby = standby_of(host_state())
    if standby and is_fault_image(standby[1]) and (ids := running_containers(standby[0])):
        stopped = on_host(f"docker stop {' '.join(ids)}")
        assert stopped.returncode == 0, f"stopping the standby's fault image: {stopped.stderr}"
        done.append(f"stopped the standby's {standby[1]} ({len(ids)} containers)")
    if host_state().get("canary"):
        step("abort.yml", "-e", "bluegreen_abort_reason='a test file starts from no canary'")
    for version in sorted(host_state().get("bad_versions") or {}):
        step("mark-bad.yml", "-e", f"app_version={version}", "-e", "bluegreen_bad=false")
    state = host_state()
    colors = state.get("colors") or {}
    active = state.get("active")
    if colors.get(active or "", {}).get("version") != START_VERSION:
        warm = next((c for c in colors if c != active), None)
        if warm and colors[warm].get("version") == START_VERSION:
            step("rollback.yml")
        else:
            step("release.yml", "-e", f"app_version={START_VERSION}")

    def problems() -> list[str]:
        try:
            serves: tuple[str, str] | None = serving()
        except (AssertionError, OSError, KeyError, ValueError):
            serves = None
        flag = on_host(f"test -e {MAINTENANCE_FLAG}").returncode == 0
        state = host_state()
        standby = standby_of(state)
        running = standby is not None and bool(running_containers(standby[0]))
        return known_state_problems(state, serves, flag, running)

    # nginx serves the switch at once; the wait covers a reload still in flight.
    wait.until(
        "the known state", lambda: not problems(), 30, 1, detail=lambda: "; ".join(problems())
    )
    return done


@pytest.fixture(scope="module", autouse=True)
def start_known() -> None:
    """Every test file starts from the known state (known_state_problems), which
    this establishes when the file before left something else, so the files pass
    in any order (ARCHIBALD_STACK_ORDER=reverse runs them backwards)."""
    done = establish_known_state()
    if done:
        print(f"\n[known state] set up before this file: {'; '.join(done)}")


def flat(text: str) -> str:
    """Ansible's output with every run of whitespace made one space, for phrase checks."""
    return " ".join(text.split())


def read_state(host: Any) -> dict[str, Any]:
    return json.loads(host.file(STATE).content_string)


def edge(
    path: str = "/health", timeout: float = 5.0, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """One JSON request through nginx, a POST of `body` or else a GET: (status,
    the JSON answer), whatever the status ({} for an error's body)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        EDGE + path,
        data=data,
        method="GET" if data is None else "POST",
        headers={
            "Host": "localhost",
            **({} if data is None else {"Content-Type": "application/json"}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=TLS) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def ask(path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET through nginx: (status, headers, body), whatever the status."""
    request = urllib.request.Request(EDGE + path, headers={"Host": "localhost"})
    try:
        with urllib.request.urlopen(request, timeout=5, context=TLS) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def serving() -> tuple[str, str]:
    """(colour, version) that answers /health through nginx."""
    status, body = edge("/health")
    assert status == 200, f"nginx does not answer /health: {status}"
    return str(body["color"]), str(body["version"])


def probe(path: str = "/health", timeout: float = 5.0) -> tuple[int, str]:
    """One request through nginx: (status, colour that answered; 0 and "error" without answer)."""
    request = urllib.request.Request(EDGE + path, headers={"Host": "localhost"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=TLS) as resp:
            body = resp.read()
            color = resp.headers.get("X-App-Color")
            if color is None and path.startswith("/health"):
                color = json.loads(body or b"{}").get("color")
            return resp.status, str(color or "?")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-App-Color", "?")
    except OSError:
        return 0, "error"


class Prober(threading.Thread):
    """Asks nginx for `path` every ~20 ms while a test runs; every answer is counted.

    samples: (monotonic start, status, colour, seconds). Use as a context manager.
    """

    def __init__(self, path: str = "/health") -> None:
        super().__init__(daemon=True)
        self.path = path
        self.samples: list[tuple[float, int, str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            status, color = probe(self.path)
            self.samples.append((started, status, color, time.monotonic() - started))
            time.sleep(0.02)

    def failed(self) -> list[tuple[float, int, str, float]]:
        return [s for s in self.samples if s[1] != 200]

    def summary(self) -> str:
        failed = len(self.failed())
        return f"{len(self.samples)} requests to {self.path} through nginx, {failed} failed"

    def __enter__(self) -> Prober:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(10)


def post_job(seconds: float = 0.3, kind: str = "sleep") -> tuple[int, str | None]:
    """Submit a job through nginx: (status, its id), or (0, None) when no answer came."""
    try:
        status, job = edge("/api/jobs", 10, {"kind": kind, "params": {"seconds": seconds}})
    except OSError:
        return 0, None
    return status, job.get("id")


# The one polling helper (harness/wait.py), by the name these tests use.
wait_for = wait.until


def running_colors(host: Any) -> dict[str, bool]:
    out = host.check_output(
        "docker ps --filter label=org.archibald.app=archibald "
        '--format \'{{.Label "org.archibald.color"}} {{.Label "org.archibald.service"}}\''
    )
    found: dict[str, bool] = {}
    for line in out.splitlines():
        color, _service = line.split()
        found[color] = True
    return found


def hey(
    seconds: int,
    rate_per_worker: int = 25,
    workers: int = 4,
    path: str = "/api/jobs?limit=1",
    *extra: str,
    count: int | None = None,
) -> subprocess.Popen[str]:
    """Bounded load through nginx with hey: `workers` x `rate_per_worker` req/s for at most
    `seconds`, or, given a `count`, until it has sent that many requests (a multiple
    of `workers`; the caller bounds the time). Stop it early with SIGINT (stop_hey);
    parse its output with parse_hey."""
    until = ("-n", str(count)) if count is not None else ("-z", f"{seconds}s")
    return subprocess.Popen(
        [
            *("hey", *until, "-c", str(workers), "-q", str(rate_per_worker)),
            *extra,
            *("-host", "localhost", f"{EDGE}{path}"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_hey(load: subprocess.Popen[str]) -> str:
    """Stop hey (it prints its summary on SIGINT) and return its output."""
    load.send_signal(signal.SIGINT)
    out, _ = load.communicate(timeout=60)
    return out


def parse_hey(output: str) -> dict[str, Any]:
    summary, _, error_part = output.partition("Error distribution:")
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", summary)}
    errors = sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]", error_part, re.M))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", summary)
    took = re.search(r"Total:\s+([\d.]+) secs", summary)
    assert rps and took, f"hey printed no summary:\n{output[-2000:]}"
    return {
        "codes": codes,
        "errors": errors,
        "error_lines": error_part.strip(),
        "rps": float(rps.group(1)),
        "seconds": float(took.group(1)),  # from its start to its last answer
    }
