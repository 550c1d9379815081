#!/usr/bin/env python3
"""Run Molecule scenarios, each within its time budget.

Role scenarios run four at a time, the longest budgets first (most of their
time is spent waiting on apt, systemd and Ansible's round trips, not on the
CPU); the whole stack (``EXCLUSIVE``) starts once every role scenario has
started (its hosts' set-up overlaps the last, shortest ones; its load tests,
which measure latency and errors, begin after them): as its three lanes at once,
each on its own host. A scenario in ``ALONE_ONLY`` runs only when it is the
one named (GitHub's job for it, ``make molecule SCENARIOS=<name>``); beside
the others it is skipped and says why and where it runs. Each scenario's output goes to
``.cache/molecule-logs/<name>.log`` and is printed when it ends.

Prints one line per scenario with its wall time and budget, then the plain
summary line ``molecule: N passed, N failed, N skipped``. A scenario that runs
past its budget is stopped (and destroyed) and counts as failed, so a slow
scenario shows up here instead of as a CI run that overruns.

Scenarios in ``ONLINE`` need a repository on the internet. Where it does not
answer they are not run and say so ("not run: repository unreachable"),
unless TESTBED_ONLINE_TESTS=required (GitHub's runners), where that is a
failure. The offline scenarios decide reachability themselves (their
repositories point at addresses that never resolve), so they pass the same on
any network.

The whole-stack scenario's tests come in parts (``STACK_PARTS``). Here
``default`` runs every part on one host, set up once. ``default:<part>`` runs
the same scenario with only that part's test files (the environment variable
``ARCHIBALD_STACK_TESTS``, read by the scenario's conftest.py): that is what
each of GitHub's parallel jobs runs, so the longest part sets ci.yml's wall
time instead of their sum.

Usage: scenarios.py [--jobs N] [SCENARIO[:PART] ...]   (default: every molecule/*/molecule.yml)
       scenarios.py --estimate-github                 (wall time of ci.yml from the budgets)
       scenarios.py --github-jobs                     (ci.yml's Molecule matrix, one per line)
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import ledger, snapshot

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / ".cache" / "molecule-logs"
# Wall-time budget per scenario in seconds; the fresh CI run must stay under
# 30 minutes in all, images and virtualenv included.
BUDGETS_S: dict[str, int] = {
    # 388 s in a CI run, three scenarios at once; 556 s beside the stack's build.
    # With the docker role's tests since stop 36 (the docker scenario converged
    # the same role on two more hosts: 231 s in CI).
    "base": 720,
    # 391-636 s here, machine shared (converge 3-4.5 min, idempotence 1.5-2.3);
    # 640 s in a CI run beside three other scenarios.
    # 891 s in the CI run of stop 23 (watchdog phase, four at once); 1,052 s
    # beside the stack's build (stop 33).
    "backup": 1320,
    # 4.3-7.5 min with testssl.sh and the traffic tests, machine shared. Stop
    # 36's clean-clone CI, on a machine about twice as slow as the one these
    # figures come from (the stack's build 1,244 s, cutover 1,618 s), stopped
    # nginx at its 810 s and accessories at its 729 s, both in their tests.
    "nginx": 720,
    "accessories": 720,  # 4.3 min here alone, 5.5-7.4 with the machine shared by other runs
    # 294 s in one CI run, over 480 s in the next (four at once), 629 s beside
    # the stack's build. With node_exporter's tests since stop 36 (its own
    # scenario converged the same role on two more hosts: 186-209 s in CI).
    "prometheus": 840,
    # Not measured: it runs only where Grafana's repository answers (GitHub).
    # Four roles with packages from two repositories, one host.
    "grafana_online": 600,
    # 5.3-7.4 min with the machine shared, the contract checks (~25 s), and the
    # paused canary and its promote job (~3 min); 961 s in a CI run beside
    # three other scenarios and 1,200+ s in a second one; stop 23: its three releases 558, 370 and
    # 260 s over SSH beside three converges, stopped at 1,500 s.
    # Stop 32: its five deploy jobs took 457, 349, 204, 531 and 217 s over SSH
    # beside the role scenarios and then the three stack hosts: 1,800 s was
    # not enough. It starts first and ends before the stack's lanes do.
    # Stop 33: stopped at 2,400 s with the contract checks in it (those took
    # 178 s on their own, app-image, in the next run); not on the critical path
    # (the stage takes 2,900-3,400 s), so a slow machine must not fail it.
    "cd-test": 3000,
    # The contract on two images with --busy, the Node package's own tests and
    # the smoke test: 178 s in a CI run beside the role scenarios and the build.
    "app-image": 600,
    # 257 s here alone since our colours share the compose volume (the
    # adoption under load 111 s, its rerun 66, the way back 17). In CI it
    # starts with three other scenarios' converges: the adoption's provision
    # alone took 410 s there (load average 12), and 720 s was not enough.
    # Stop 23: its adoption 513 s beside three converges, 961 s in all; stop
    # 33: stopped at 1,200 s beside the stack's build and four other runs.
    "cutover": 1500,
    # Alone only (ALONE_ONLY): 20 releases of about 15.7 s each (5.4 min of
    # tests), 8.5 min in all here; the converge is three roles.
    "pruning": 900,
}
# alertmanager and grafana: 507 and 661 s in stop 36's CI on the slow machine.
DEFAULT_BUDGET_S = 600
# The whole-stack scenario: its set-up (create, converge, idempotence: about
# 3.5 min here) and its tests in parts, each part the test files it runs and
# the most they may take. Every test file is in exactly one part (a unit test
# checks it). `default` runs the files in their own order, whatever the parts.
STACK = "default"
STACK_SETUP_S = 300  # about 200 s here
STACK_TESTS_ENV = "ARCHIBALD_STACK_TESTS"
STACK_BESIDE_ENV = "ARCHIBALD_STACK_BESIDE"
# The image a lane's host is created from (molecule/default/molecule.yml).
STACK_IMAGE_ENV = "ARCHIBALD_STACK_IMAGE"
# Set for a role scenario that runs beside others (the role stage's lanes):
# a scenario whose figure is a latency under load (molecule/cutover's seconds
# of refusal) then holds a looser bound and says so; run alone (GitHub's jobs,
# `make molecule SCENARIOS=cutover`) it holds the target.
SHARED_ENV = "ARCHIBALD_SHARED_MACHINE"
# Each part alone here, the machine shared with other test runs: engine 405 s
# of tests, faults 396 s.
STACK_PARTS: dict[str, tuple[tuple[str, ...], int]] = {
    "release": (("test_1_release_under_load", "test_2_failures"), 600),
    "monitoring": (("test_3_monitoring", "test_4_analysis"), 660),  # 560 s beside two hosts
    "faults": (("test_5_faults", "test_6_security"), 540),
    # 520 s with test_12 beside two other hosts, before the two move-back tests
    # (about 250 s alone here); stop 32: its lane (set-up, monitoring, engine)
    # was stopped at 1,920 s with the last two tests to run, about 350 s more.
    "engine": (("test_7_engine",), 1320),
    "alerting": (("test_9_alerting",), 600),  # 412 s alone, 475 s beside two other hosts
    # 126 s alone, maintenance 30 s, status and logs 25 s; assets (a release, a
    # retirement, a rollback that starts the old release again) not measured yet,
    # about 2 min expected.
    "edge": (
        ("test_8_edge_limits", "test_11_maintenance", "test_13_status_logs", "test_15_assets"),
        540,
    ),
    # 437-470 s of tests alone on the second slot, before the healthy canary at
    # 2 requests/s (about 50 s more). The Node service's release and rollback
    # (test_16): about a minute more.
    "canary": (("test_10_canary", "test_16_node_service"), 900),
    "hooks": (("test_12_hooks",), 300),  # 97 s beside two other hosts
    # Not measured yet: two releases (~60 s each here), a hang and a crash the
    # watchdog heals within 15 s, the first crash 40 s after its start.
    "watchdog": (("test_14_watchdog",), 360),
}
# `make test` runs the whole stack as these lanes, at once, each on a host of
# its own (a slot: the host's name, its published port, Molecule's working
# directory), each lane's parts one after the other on its host; the parts
# whose figures are latencies (release, edge, faults) share a lane. Two lanes
# made the second one the long pole of CI (monitoring+engine+alerting: 1,696 s,
# the CI run 2,731 s in all); three took 1,257-1,453 s each (tests 880-1,090 s).
# A fourth host made every lane slower by a third (the two cores, not the
# waiting, bound them): three it is. The first slot's lane repeats the converge
# for idempotence (below), so it has the fewest seconds of tests.
STACK_LANES: tuple[tuple[str, ...], ...] = (
    ("alerting", "canary", "watchdog"),
    ("release", "edge", "faults", "hooks"),
    ("monitoring", "engine"),
)
STACK_SLOTS: tuple[dict[str, str], ...] = (
    {"ARCHIBALD_STACK_HOST": "default-deb12", "ARCHIBALD_STACK_PORT": "18443"},
    *(
        {
            "ARCHIBALD_STACK_HOST": f"default-deb12-{letter}",
            "ARCHIBALD_STACK_PORT": port,
            "MOLECULE_EPHEMERAL_DIRECTORY": str(ROOT / ".cache" / f"molecule-default-{letter}"),
        }
        # 18445 is molecule/cutover's.
        for letter, port in (("b", "18444"), ("c", "18446"))
    ),
)
# Every slot's host converges with the same playbook and the same variables
# (host_vars/ links the slots' files to one). When the lanes run at once, the
# stack converges once: STACK_BUILD converges the first slot's host (with
# Molecule's idempotence check, a real converge), starting with the role
# scenarios, and harness/snapshot.py makes an image and a volume of it; the
# lanes start when the build has ended and every role scenario has started,
# the first slot's lane on the built host, the others on copies of it.
# Run on its own (a part, GitHub's jobs) the scenario converges as always.
STACK_SEQUENCE_AFTER_FIRST_SLOT = ("destroy", "create", "prepare", "converge", "verify")
STACK_BUILD = f"{STACK}:snapshot"
# Converge and idempotence beside the role scenarios and cd-test (the lanes'
# converges took 6.8 min and the idempotence run 3 min in CI), then the snapshot.
STACK_BUILD_BUDGET_S = 1800
# Suites that are not Molecule scenarios but share the role scenarios' lanes
# (each makes and removes its own hosts): name -> command.
# cd-test is cd.yml's deploy job against a sandbox host; app-image checks the
# app images themselves (smoke test by digest, the app contract, the Node
# package). Two runs so that they share the pool's places rather than one
# 35-minute run (stop 33's cd-test with both was stopped at its 2,400 s).
_PYTEST = ["pytest", "-q", "-s", "-p", "no:cacheprovider"]
SUITES: dict[str, list[str]] = {
    "cd-test": [*_PYTEST, "tests/cd/test_cd_deploy_job.py"],
    "app-image": [*_PYTEST, "tests/cd/test_contract.py", "tests/cd/test_image_smoke.py"],
}
EXCLUSIVE = {STACK}
# Suites that wait far more than they work (app-image: 95 % of its wall time in
# CI23): they take no place among the role scenarios and start with the
# lanes, which then start as soon as the last role scenario has started, not
# when a place frees for them (app-image, the last of the queue, held the
# lanes back by grafana's 114 s in CI23).
WITH_LANES = {"app-image"}
# Scenarios too heavy for `make test` on this 2-core machine, where every
# scenario shares the two cores: name -> why. Each is a job of its own on
# GitHub (ci.yml's matrix) and runs here when named alone.
ALONE_ONLY: dict[str, str] = {
    "pruning": (
        "its 20 releases took 14 min beside the other scenarios and made the whole run "
        "49 min, over CI's 45 (8.5 min alone)"
    ),
}
# Scenario -> the URL it needs; read from the role's defaults, not repeated here.
ONLINE: dict[str, tuple[Path, str]] = {
    "grafana_online": (ROOT / "roles/grafana/defaults/main.yml", "grafana_apt_key_url"),
}
# What a GitHub job spends around its scenario, an estimate not a measurement
# on GitHub: apt-get ~0.5 min, virtualenv ~1, the harness's Debian images
# loaded from actions/cache ~0.5 (the first job of a week or of a new recipe
# builds them: debootstrap ~2.5), app images and registry ~1.
GITHUB_JOB_SETUP_S = 210
# Jobs of ci.yml that are not a Molecule scenario: set-up plus what they took
# here (lint 2 min, unit 3 min, cd-test 8 min with the canary case and the
# contract), rounded up.
GITHUB_OTHER_JOBS_S: dict[str, int] = {"lint": 240, "unit": 420, "cd-test": 840}
# The image job runs after every test job: wheels, build, smoke test, push.
GITHUB_IMAGE_JOB_S = 300
GITHUB_TARGET_S = 25 * 60


class Child(subprocess.Popen[bytes]):
    """A run's process: once it has ended, its CPU time and its descendants' (wait4)
    is known, for the time ledger (harness/ledger.py)."""

    cpu_s: float | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                self.cpu_s = usage.ru_utime + usage.ru_stime
        return self.returncode


@dataclass
class Run:
    name: str
    budget: int
    log: Path
    proc: Child | None = None
    started: float = 0.0
    elapsed: float = 0.0
    ok: bool = False
    skipped: bool = False
    why: str = ""
    handle: object = field(default=None, repr=False)
    slot: int = 0  # the whole stack's host slot (STACK_SLOTS)
    beside: bool = False  # another whole-stack host runs at the same time
    from_snapshot: bool = False  # a lane on the host STACK_BUILD made (or a copy)
    ticks: tuple[int, int] | None = None  # the machine's CPU ticks at its start (ledger)


def scenarios_on_disk() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def stack_tests_on_disk() -> list[str]:
    """The whole-stack scenario's test files, by stem."""
    return sorted(p.stem for p in (ROOT / "molecule" / STACK / "tests").glob("test_*.py"))


def github_jobs() -> list[str]:
    """ci.yml's Molecule matrix: every scenario, the whole stack once per part."""
    names: list[str] = []
    for name in scenarios_on_disk():
        names += [f"{STACK}:{p}" for p in STACK_PARTS] if name == STACK else [name]
    return names


def parts_of(name: str) -> list[str]:
    """The whole-stack parts `name` runs: "default:a+b" -> [a, b]; "default" -> all."""
    scenario, _, parts = name.partition(":")
    if scenario != STACK:
        return []
    return parts.split("+") if parts else list(STACK_PARTS)


# The budgets above were measured on one machine; machines "like ours" ran the
# same commit up to 1.9 times slower (the stack's build 776 s in one CI run,
# 1,456 s in the next, base 388 and 624 s, nginx near its 600 s). A budget is
# there to stop a run that hangs, with its reason, well before CI's own limit,
# not to fail a slow machine: on this machine every run gets this much more.
# GitHub's estimate (--estimate-github) uses the budgets as they are.
LOCAL_BUDGET_SCALE = 1.35


def local_budget(name: str) -> int:
    """The wall time `name` may take here: its budget with the machine's margin."""
    return round(budget(name) * LOCAL_BUDGET_SCALE)


def budget(name: str) -> int:
    if name == STACK_BUILD:
        return STACK_BUILD_BUDGET_S
    if name.partition(":")[0] == STACK:
        return STACK_SETUP_S + sum(STACK_PARTS[p][1] for p in parts_of(name))
    return BUDGETS_S.get(name, DEFAULT_BUDGET_S)


def run_env(
    name: str, slot: int = 0, beside: bool = False, from_snapshot: bool = False
) -> dict[str, str]:
    """The environment a scenario runs with: a part names its test files, and the
    whole stack its host's slot, and whether other hosts share the machine
    (the load test then offers less: see test_1_release_under_load.py); a copy
    of the built host is created from the snapshot's image."""
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", NO_COLOR="1")
    for key in (STACK_TESTS_ENV, STACK_BESIDE_ENV, SHARED_ENV, STACK_IMAGE_ENV, *STACK_SLOTS[-1]):
        env.pop(key, None)
    if beside and name.partition(":")[0] != STACK:
        env[SHARED_ENV] = "1"
    if name == STACK_BUILD:
        env.update(STACK_SLOTS[0])
    elif name.partition(":")[0] == STACK:
        env.update(STACK_SLOTS[slot])
        if from_snapshot and slot > 0:
            env[STACK_IMAGE_ENV] = snapshot.IMAGE
        if beside:
            env[STACK_BESIDE_ENV] = "1"
        if ":" in name:
            files = [f for part in parts_of(name) for f in STACK_PARTS[part][0]]
            env[STACK_TESTS_ENV] = ",".join(files)
    return env


def online_url(name: str) -> str:
    import yaml

    path, key = ONLINE[name]
    return str(yaml.safe_load(path.read_text())[key])


def unreachable(url: str, timeout: float = 5.0) -> str:
    """Why ``url`` cannot be fetched from here, or "" when it answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return "" if answer.status == 200 else f"HTTP {answer.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return str(getattr(exc, "reason", exc))


def skip_offline(run: Run) -> bool:
    """Mark an online scenario skipped when its repository is unreachable here."""
    if run.name not in ONLINE:
        return False
    url = online_url(run.name)
    why = unreachable(url)
    if not why:
        return False
    if os.environ.get("TESTBED_ONLINE_TESTS") == "required":
        print(
            f"=== molecule test -s {run.name}: repository {url} unreachable ({why}) and "
            "TESTBED_ONLINE_TESTS=required: running it anyway, it will fail",
            flush=True,
        )
        return False
    run.skipped, run.ok = True, False
    run.why = f"not run: repository unreachable ({url}: {why})"
    print(f"=== skip molecule test -s {run.name}: {run.why}", flush=True)
    return True


def command(name: str, slot: int = 0, from_snapshot: bool = False) -> list[str]:
    """What runs `name`: a suite's command; `molecule test`; the stack's build
    (converge, idempotence, snapshot; the host stays for the first lane); a
    lane on the built host or on a copy of it; or, for a whole-stack host after
    the first slot without a snapshot, its steps without idempotence. A lane's
    host is destroyed at the end whatever happened (as `molecule test` does)."""
    if name in SUITES:
        return SUITES[name]
    scenario = name.partition(":")[0]
    snap = f"{sys.executable} -m harness.snapshot"
    if name == STACK_BUILD:
        steps = " && ".join(
            f"molecule {step} -s {scenario}"
            for step in ("destroy", "create", "prepare", "converge", "idempotence")
        )
        return ["bash", "-c", f"{steps} && {snap} take"]
    if scenario != STACK or (slot == 0 and not from_snapshot):
        return ["molecule", "test", "-s", scenario]
    if from_snapshot:
        before = [f"{snap} serving"]
        if slot > 0:
            before = [
                f"molecule destroy -s {scenario}",
                f"{snap} seed",
                f"molecule create -s {scenario}",
                f"molecule prepare -s {scenario}",
                *before,
            ]
        steps = " && ".join([*before, f"molecule verify -s {scenario}"])
    else:
        steps = " && ".join(
            f"molecule {step} -s {scenario}" for step in STACK_SEQUENCE_AFTER_FIRST_SLOT
        )
    return ["bash", "-c", f"{steps}; rc=$?; molecule destroy -s {scenario}; exit $rc"]


def start(run: Run) -> None:
    LOGS.mkdir(parents=True, exist_ok=True)
    handle = run.log.open("wb")
    run.handle = handle
    print(
        f"=== start {run.name}: {' '.join(command(run.name, run.slot, run.from_snapshot))} "
        f"(budget {run.budget} s, log {run.log})",
        flush=True,
    )
    run.proc = Child(
        command(run.name, run.slot, run.from_snapshot),
        cwd=ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=run_env(run.name, run.slot, run.beside, run.from_snapshot),
    )
    run.started, run.ticks = time.monotonic(), ledger.sample()


def finish(run: Run, code: int | None) -> None:
    run.elapsed = time.monotonic() - run.started
    assert run.proc is not None
    if code is None:  # over budget
        os.killpg(run.proc.pid, signal.SIGTERM)
        try:
            run.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
        if run.name not in SUITES:
            subprocess.run(
                ["molecule", "destroy", "-s", run.name.partition(":")[0]],
                cwd=ROOT,
                env=run_env(run.name, run.slot, run.beside, run.from_snapshot),
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        run.ok, run.why = False, f"over its budget of {run.budget} s: stopped and destroyed"
    else:
        run.ok = code == 0
        run.why = "" if run.ok else f"molecule exited {code}"
    if run.name == STACK_BUILD and not run.ok:
        # The lanes waiting for it stop at once and say why.
        snapshot.write_state("failed", why=f"{STACK_BUILD} {run.why}")
    run.handle.close()  # type: ignore[attr-defined]
    ledger.record(
        f"  {run.name}",
        run.elapsed,
        run.proc.cpu_s if code is not None else None,
        run.ok,
        machine=ledger.busy_share(run.ticks, ledger.sample()),
        why=None if run.ok else failure_lines(run, most=12, tail=0),
    )
    verdict = "PASS" if run.ok else "FAIL"
    print(
        f"=== end {run.name}: {' '.join(command(run.name, run.slot, run.from_snapshot))}: "
        f"{verdict} "
        f"in {run.elapsed:.0f} s {run.why}",
        flush=True,
    )
    sys.stdout.write(run.log.read_text(errors="replace"))
    print(f"=== (end of {run.name} log)", flush=True)


# Lines of a failed run's log that say why: Ansible's failed tasks, pytest's
# failures and its summary, the assertion messages (not Ansible's retries of a
# task that is still waiting, "FAILED - RETRYING").
FAILURE_MARKS = ("fatal:", "failed:", "FAILED ", "ERROR ", "AssertionError", "E   ", "Error:")


def failure_lines(run: Run, most: int = 40, tail: int = 10) -> list[str]:
    """Why `run` failed, from its log: the marked lines (at most `most`, the last
    ones), then its last `tail` lines. The summary repeats them after every log,
    and the time ledger once more at the very end of CI's output."""
    if not run.log.is_file():
        return [run.why]
    lines = run.log.read_text(errors="replace").splitlines()
    marked = [
        line
        for line in lines
        if any(mark in line for mark in FAILURE_MARKS) and "FAILED - RETRYING" not in line
    ]
    return [run.why, *marked[-most:], *(["...", *lines[-tail:]] if tail else [])]


def run_all(
    runs: list[Run], jobs: int, then: list[Run] | None = None, first: list[Run] | None = None
) -> None:
    """Run `runs`, at most `jobs` at a time, in order. `first` (the stack's build)
    starts at once and takes one of the `jobs` places until it ends (started
    as a fifth beside four role scenarios, it made them a fifth slower and
    cutover overran its budget). `then` (the whole stack's lanes, and the suites
    of WITH_LANES) all start as soon as every one of `runs` has started and
    every one of `first` has ended:
    the lanes' load tests begin while the last, shortest role scenarios end
    (longest budget first), not beside their converges."""
    queue = list(runs)
    later = list(then or [])
    for run in runs:
        if run.name.partition(":")[0] != STACK:
            run.beside = jobs > 1 and len(runs) > 1
    active: list[Run] = []
    limited: list[Run] = []
    for run in first or []:
        start(run)
        active.append(run)
        limited.append(run)
    while queue or active or later:
        while queue and len(limited) < jobs:
            run = queue.pop(0)
            if skip_offline(run):
                continue
            start(run)
            active.append(run)
            limited.append(run)
        if not queue and not any(run in active for run in first or []):
            for run in later:
                start(run)
                active.append(run)
            later = []
        time.sleep(1)
        for run in list(active):
            assert run.proc is not None
            code = run.proc.poll()
            over = time.monotonic() - run.started > run.budget
            if code is not None or over:
                finish(run, code)
                active.remove(run)
                if run in limited:
                    limited.remove(run)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--jobs",
        type=int,
        # Four at once: the role scenarios mostly wait on apt, systemd and
        # Ansible's round trips; three lanes took the role phase of CI from 8.5
        # to 7.3 minutes, and with the accessories, backup and cut-over
        # scenarios (up to 11 min each) three lanes would take 19 minutes.
        default=int(os.environ.get("MOLECULE_JOBS", "4")),
        help="role scenarios run at once (default 4, env MOLECULE_JOBS)",
    )
    parser.add_argument(
        "--estimate-github",
        action="store_true",
        help="print the estimated wall time of ci.yml on GitHub from the budgets",
    )
    parser.add_argument(
        "--github-jobs",
        action="store_true",
        help="print ci.yml's Molecule matrix (one scenario or whole-stack part a line)",
    )
    parser.add_argument("scenarios", nargs="*")
    args = parser.parse_args(argv)
    if args.estimate_github:
        return estimate_github()
    if args.github_jobs:
        print("\n".join(github_jobs()))
        return 0
    problems = stack_parts_problems()
    if problems:
        print("scenarios: " + "; ".join(problems), file=sys.stderr)
        return 2
    names = args.scenarios or scenarios_on_disk()
    # The bare whole stack runs as its lanes, each on its own host.
    lanes = [f"{STACK}:{'+'.join(lane)}" for lane in STACK_LANES]
    names = [lane for n in names for lane in (lanes if n == STACK else [n])]
    known = scenarios_on_disk() + list(SUITES)
    unknown = [
        n for n in names if n not in known and not (n.startswith(f"{STACK}:") and parts_known(n))
    ]
    if unknown:
        parts = "+".join(STACK_PARTS)
        print(
            f"scenarios: no such scenario {unknown}; have {known}, or {STACK}:<parts> "
            f"with parts from {parts} joined by +",
            file=sys.stderr,
        )
        return 2
    runs = {n: Run(n, local_budget(n), LOGS / f"{n.replace(':', '-')}.log") for n in names}
    # Suites first: the longest of the shared lanes starts at once.
    alone = [runs[n] for n in names if n.partition(":")[0] in EXCLUSIVE]
    at_once = len(alone) <= len(STACK_SLOTS)
    for slot, run in enumerate(alone):
        run.slot = slot % len(STACK_SLOTS)
        run.beside = at_once and len(alone) > 1
    for name in names:
        if name in ALONE_ONLY and len(names) > 1:
            run = runs[name]
            run.skipped = True
            run.why = (
                f"not run beside the others: {ALONE_ONLY[name]}; it runs as its own GitHub "
                f"job and here with `make molecule SCENARIOS={name}`"
            )
            print(f"=== skip molecule test -s {name}: {run.why}", flush=True)
    # Longest budget first, so that the longest runs do not start last.
    shared = [
        runs[n]
        for n in sorted(names, key=lambda n: -runs[n].budget)
        if runs[n] not in alone and not runs[n].skipped
    ]
    late = [run for run in shared if run.name in WITH_LANES] if at_once and alone else []
    shared = [run for run in shared if run not in late]
    for run in late:
        run.beside = True
    build: list[Run] = []
    if at_once and len(alone) > 1:
        # The lanes start from one converge (harness/snapshot.py).
        build = [Run(STACK_BUILD, local_budget(STACK_BUILD), LOGS / f"{STACK}-snapshot.log")]
        for run in alone:
            run.from_snapshot = True
        snapshot.main(["reset"])
    started = time.monotonic()
    if at_once:
        # Each whole-stack run on its own host, started with the last role runs.
        run_all(shared, max(1, args.jobs), then=[*alone, *late], first=build)
    else:  # more whole-stack runs than hosts: one after the other, afterwards
        run_all(shared, max(1, args.jobs))
        run_all(alone, 1)
    print(f"\nMolecule scenarios and suites ({time.monotonic() - started:.0f} s in all):")
    for run in [*build, *runs.values()]:
        status = "SKIP" if run.skipped else "PASS" if run.ok else "FAIL"
        print(f"  {status}  {run.name:<28} {run.elapsed:6.0f} s of {run.budget} s  {run.why}")
    for run in [*build, *runs.values()]:
        if not run.ok and not run.skipped:
            print(f"\nWhy {run.name} failed ({run.log}, printed whole above):")
            print("\n".join(f"  {line}" for line in failure_lines(run)))
    every = [*build, *runs.values()]
    passed = sum(1 for r in every if r.ok)
    skipped = sum(1 for r in every if r.skipped)
    failed = len(every) - passed - skipped
    print(f"molecule: {passed} passed, {failed} failed, {skipped} skipped")
    return 0 if failed == 0 else 1


def parts_known(name: str) -> bool:
    parts = parts_of(name)
    return bool(parts) and all(p in STACK_PARTS for p in parts) and len(set(parts)) == len(parts)


def stack_parts_problems() -> list[str]:
    """What is wrong with STACK_PARTS against the test files on disk."""
    listed = [stem for files, _ in STACK_PARTS.values() for stem in files]
    on_disk = stack_tests_on_disk()
    problems = [
        f"molecule/{STACK}/tests/{stem}.py is in no part of STACK_PARTS in "
        "harness/scenarios.py: add it to one (or a new part, with its budget and its "
        "entry in ci.yml's matrix)"
        for stem in on_disk
        if stem not in listed
    ]
    problems += [
        f"STACK_PARTS names {stem}, which is not a test file" for stem in set(listed) - set(on_disk)
    ]
    problems += [
        f"STACK_PARTS names {stem} twice" for stem in {s for s in listed if listed.count(s) > 1}
    ]
    in_lanes = [part for lane in STACK_LANES for part in lane]
    if sorted(in_lanes) != sorted(STACK_PARTS):
        problems.append(
            f"STACK_LANES {STACK_LANES} must name every part of STACK_PARTS exactly once "
            f"({sorted(STACK_PARTS)})"
        )
    if len(STACK_LANES) > len(STACK_SLOTS):
        problems.append(f"{len(STACK_LANES)} STACK_LANES but only {len(STACK_SLOTS)} STACK_SLOTS")
    return problems


def estimate_github() -> int:
    """Print ci.yml's estimated wall time: its parallel jobs, then the image job.

    Each Molecule scenario, and each part of the whole stack, is its own job
    on GitHub: set-up plus the budget (the most it may take before it is
    stopped). The run takes as long as its longest test job plus the image job
    after it.
    """
    jobs = {f"molecule {n}": GITHUB_JOB_SETUP_S + budget(n) for n in github_jobs()}
    jobs.update(GITHUB_OTHER_JOBS_S)
    longest = max(jobs, key=lambda j: jobs[j])
    total = jobs[longest] + GITHUB_IMAGE_JOB_S
    print("Estimated GitHub wall time of ci.yml (from harness/scenarios.py budgets):")
    for job, seconds in sorted(jobs.items(), key=lambda item: -item[1]):
        print(f"  {job:<30} {seconds / 60:5.1f} min")
    verdict = "within" if total <= GITHUB_TARGET_S else "OVER"
    print(
        f"longest job: {longest} ({jobs[longest] / 60:.1f} min) + image "
        f"({GITHUB_IMAGE_JOB_S / 60:.1f} min) = {total / 60:.1f} min, {verdict} the "
        f"{GITHUB_TARGET_S / 60:.0f} min target"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
