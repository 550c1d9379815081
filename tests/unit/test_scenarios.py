"""harness/scenarios.py: online scenarios say plainly when they were not run,
and fail instead where they are required; the GitHub estimate adds up."""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from httpstub import serving

from harness import scenarios


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/gpg.key" else 404)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    with serving(Handler) as port:
        yield f"http://127.0.0.1:{port}"


@dataclass
class Planned:
    """What one call of scenarios.run_all was given: the pool's runs, the runs
    started once the pool is under way (then), and those before it (first)."""

    runs: list[scenarios.Run]
    then: list[scenarios.Run]
    first: list[scenarios.Run]


@pytest.fixture
def planned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Planned]:
    """scenarios.run_all replaced by a recorder under which every run passes, and
    the snapshot's state file in tmp_path: main() plans, nothing starts."""
    calls: list[Planned] = []

    def fake_run_all(
        runs: list[scenarios.Run],
        jobs: int,
        then: list[scenarios.Run] | None = None,
        first: list[scenarios.Run] | None = None,
    ) -> None:
        call = Planned(runs, then or [], first or [])
        for run in [*call.runs, *call.then, *call.first]:
            run.ok = True
        calls.append(call)

    monkeypatch.setattr(scenarios, "run_all", fake_run_all)
    monkeypatch.setattr(scenarios.snapshot, "STATE", tmp_path / "state.json")
    return calls


def _online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str) -> scenarios.Run:
    defaults = tmp_path / "defaults.yml"
    defaults.write_text(f"probe_url: {url}\n")
    monkeypatch.setattr(scenarios, "ONLINE", {"online": (defaults, "probe_url")})
    return scenarios.Run("online", 60, tmp_path / "online.log")


def test_unreachable_repository_is_not_run_and_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TESTBED_ONLINE_TESTS", raising=False)
    run = _online(monkeypatch, tmp_path, "https://grafana-repository.invalid/gpg.key")
    assert scenarios.skip_offline(run)
    assert run.skipped and not run.ok
    assert "not run: repository unreachable" in capsys.readouterr().out


def test_required_online_scenario_runs_even_when_unreachable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TESTBED_ONLINE_TESTS", "required")
    run = _online(monkeypatch, tmp_path, "https://grafana-repository.invalid/gpg.key")
    assert not scenarios.skip_offline(run)
    assert not run.skipped


def test_reachable_repository_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: str
) -> None:
    monkeypatch.delenv("TESTBED_ONLINE_TESTS", raising=False)
    assert not scenarios.skip_offline(_online(monkeypatch, tmp_path, f"{server}/gpg.key"))
    assert scenarios.unreachable(f"{server}/missing") == "HTTP 404"


def test_offline_scenarios_are_never_skipped(tmp_path: Path) -> None:
    assert not scenarios.skip_offline(scenarios.Run("grafana", 60, tmp_path / "g.log"))


def test_the_online_scenario_reads_the_roles_repository_url() -> None:
    assert scenarios.online_url("grafana_online").endswith("/gpg.key")


def test_github_estimate_is_the_longest_job_plus_the_image(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert scenarios.estimate_github() == 0
    out = capsys.readouterr().out
    # Each Molecule job: set-up plus its budget; cd-test, lint and unit are
    # GitHub jobs of their own with their own estimates.
    longest = max(
        *(scenarios.GITHUB_JOB_SETUP_S + scenarios.budget(j) for j in scenarios.github_jobs()),
        *scenarios.GITHUB_OTHER_JOBS_S.values(),
    )
    total = (longest + scenarios.GITHUB_IMAGE_JOB_S) / 60
    assert f"= {total:.1f} min" in out


def test_every_whole_stack_test_file_is_in_exactly_one_part() -> None:
    assert scenarios.stack_parts_problems() == []
    assert scenarios.stack_tests_on_disk(), "no whole-stack tests found"


def test_a_test_file_in_no_part_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(scenarios, "stack_tests_on_disk", lambda: ["test_1_a", "test_9_new"])
    monkeypatch.setattr(scenarios, "STACK_PARTS", {"a": (("test_1_a", "test_0_gone"), 60)})
    assert scenarios.main(["base"]) == 2
    err = capsys.readouterr().err
    assert "test_9_new.py is in no part of STACK_PARTS" in err
    assert "test_0_gone, which is not a test file" in err


def test_a_part_runs_the_whole_stack_scenario_with_only_its_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(scenarios.STACK_TESTS_ENV, "leftover")
    name = f"{scenarios.STACK}:engine"
    assert scenarios.command(name) == ["molecule", "test", "-s", scenarios.STACK]
    assert scenarios.run_env(name)[scenarios.STACK_TESTS_ENV] == ",".join(
        scenarios.STACK_PARTS["engine"][0]
    )
    # The whole scenario runs every file: nothing is inherited from the caller.
    assert scenarios.STACK_TESTS_ENV not in scenarios.run_env(scenarios.STACK)
    assert scenarios.budget(name) == scenarios.STACK_SETUP_S + scenarios.STACK_PARTS["engine"][1]
    assert scenarios.budget(scenarios.STACK) == scenarios.STACK_SETUP_S + sum(
        seconds for _, seconds in scenarios.STACK_PARTS.values()
    )


def test_the_github_estimate_counts_each_part_not_their_sum(
    capsys: pytest.CaptureFixture[str],
) -> None:
    scenarios.estimate_github()
    out = capsys.readouterr().out
    for part in scenarios.STACK_PARTS:
        assert f"molecule {scenarios.STACK}:{part}" in out
    assert f"molecule {scenarios.STACK} " not in out


def test_the_whole_stack_runs_as_its_lanes_each_on_a_host_of_its_own(
    planned: list[Planned], tmp_path: Path
) -> None:
    (tmp_path / "state.json").write_text('{"state": "failed"}')
    assert scenarios.main([scenarios.STACK]) == 0
    (call,) = planned
    assert not any(r.name.startswith(f"{scenarios.STACK}:") for r in call.runs)
    assert len(call.then) == len(scenarios.STACK_LANES), "lanes at once"
    started, builds = call.then, call.first
    assert not (tmp_path / "state.json").exists(), "an earlier run's snapshot state is reset"
    assert [r.name for r in builds] == [scenarios.STACK_BUILD], "one converge for every lane"
    assert all(r.from_snapshot for r in started)
    images = [
        scenarios.run_env(r.name, r.slot, r.beside, r.from_snapshot).get(scenarios.STACK_IMAGE_ENV)
        for r in started
    ]
    assert images == [None] + [scenarios.snapshot.IMAGE] * (len(started) - 1)
    assert (
        scenarios.run_env(scenarios.STACK_BUILD)["ARCHIBALD_STACK_HOST"]
        == (scenarios.STACK_SLOTS[0]["ARCHIBALD_STACK_HOST"])
    )
    lanes = [f"{scenarios.STACK}:{'+'.join(lane)}" for lane in scenarios.STACK_LANES]
    assert [r.name for r in started] == lanes
    assert [r.slot for r in started] == list(range(len(lanes)))
    hosts = {scenarios.run_env(r.name, r.slot)["ARCHIBALD_STACK_HOST"] for r in started}
    ports = {scenarios.run_env(r.name, r.slot)["ARCHIBALD_STACK_PORT"] for r in started}
    assert len(hosts) == len(ports) == len(lanes)
    assert all(r.beside for r in started), "each lane knows a second host shares the machine"
    assert scenarios.run_env(lanes[0], 0, True)[scenarios.STACK_BESIDE_ENV] == "1"
    assert scenarios.STACK_BESIDE_ENV not in scenarios.run_env(f"{scenarios.STACK}:engine")
    second = scenarios.run_env(lanes[1], 1)
    assert "MOLECULE_EPHEMERAL_DIRECTORY" in second
    assert "MOLECULE_EPHEMERAL_DIRECTORY" not in scenarios.run_env(lanes[0], 0)
    files = second[scenarios.STACK_TESTS_ENV].split(",")
    assert files == [f for p in scenarios.STACK_LANES[1] for f in scenarios.STACK_PARTS[p][0]]


def test_every_slot_host_has_the_scenarios_host_vars() -> None:
    host_vars = scenarios.ROOT / "molecule" / scenarios.STACK / "host_vars"
    for slot in scenarios.STACK_SLOTS:
        assert (host_vars / f"{slot['ARCHIBALD_STACK_HOST']}.yml").is_file(), slot


def test_an_unknown_part_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert scenarios.main([f"{scenarios.STACK}:nope"]) == 2
    assert "joined by +" in capsys.readouterr().err


def test_the_stack_starts_once_every_role_scenario_has_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four role scenarios two at a time, then two stack hosts: the hosts start as
    soon as the last role scenario started, not after it ended."""
    events: list[str] = []

    class Proc:
        def __init__(self, polls: int) -> None:
            self.left = polls

        def poll(self) -> int | None:
            self.left -= 1
            return 0 if self.left <= 0 else None

    def fake_start(run: scenarios.Run) -> None:
        events.append(f"start {run.name}")
        run.proc = Proc(3)  # type: ignore[assignment]
        run.started = 0.0

    def fake_finish(run: scenarios.Run, code: int | None) -> None:
        events.append(f"end {run.name}")

    monkeypatch.setattr(scenarios, "start", fake_start)
    monkeypatch.setattr(scenarios, "finish", fake_finish)
    monkeypatch.setattr(scenarios, "skip_offline", lambda run: False)
    monkeypatch.setattr(scenarios.time, "sleep", lambda s: None)
    monkeypatch.setattr(scenarios.time, "monotonic", lambda: 0.0)
    roles = [scenarios.Run(n, 600, scenarios.LOGS / n) for n in ("a", "b", "c", "d")]
    stack = [scenarios.Run(f"default:{p}", 900, scenarios.LOGS / p) for p in ("x", "y")]
    scenarios.run_all(roles, 2, then=stack)
    assert events.index("start default:x") == events.index("start d") + 1
    assert events.index("start default:x") < events.index("end d")
    assert events.index("start c") > events.index("end a")  # two at a time
    assert all(r.beside for r in roles)
    assert sum(e.startswith("end") for e in events) == 6


def test_the_stack_converges_once_and_every_lane_starts_from_it() -> None:
    build = " ".join(scenarios.command(scenarios.STACK_BUILD))
    for step in ("destroy", "create", "prepare", "converge", "idempotence"):
        assert f"molecule {step} -s {scenarios.STACK}" in build
    assert build.endswith("-m harness.snapshot take"), "the host stays for the first lane"
    first = " ".join(scenarios.command(f"{scenarios.STACK}:release", 0, True))
    other = " ".join(scenarios.command(f"{scenarios.STACK}:engine", 1, True))
    for lane in (first, other):
        assert "converge" not in lane and "idempotence" not in lane, lane
        assert "harness.snapshot serving && molecule verify" in lane
        assert lane.endswith(f"molecule destroy -s {scenarios.STACK}; exit $rc"), lane
    assert "create" not in first, "the first lane runs on the built host"
    assert other.index("harness.snapshot seed") < other.index("molecule create")
    assert other.index(f"molecule destroy -s {scenarios.STACK}") < other.index("seed")


def test_lanes_start_after_the_build_ended_and_every_role_scenario_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    events: list[str] = []
    polls = {"build": 8, "a": 2, "b": 2, "lane": 1}

    class Proc:
        def __init__(self, name: str) -> None:
            self.left = polls[name.split(":")[-1] if ":" in name else name]

        def poll(self) -> int | None:
            self.left -= 1
            return 0 if self.left <= 0 else None

    def fake_start(run: scenarios.Run) -> None:
        events.append(f"start {run.name}")
        run.proc = Proc(run.name)  # type: ignore[assignment]
        run.started = 0.0

    monkeypatch.setattr(scenarios, "start", fake_start)
    monkeypatch.setattr(scenarios, "finish", lambda run, code: events.append(f"end {run.name}"))
    monkeypatch.setattr(scenarios, "skip_offline", lambda run: False)
    monkeypatch.setattr(scenarios.time, "sleep", lambda s: None)
    monkeypatch.setattr(scenarios.time, "monotonic", lambda: 0.0)
    roles = [scenarios.Run(n, 600, tmp_path / n) for n in ("a", "b")]
    build = [scenarios.Run("default:build", 900, tmp_path / "build")]
    lanes = [scenarios.Run("default:lane", 900, tmp_path / "lane")]
    scenarios.run_all(roles, 2, then=lanes, first=build)
    assert events[:2] == ["start default:build", "start a"], "the build first, beside a role"
    assert events.index("start b") > events.index("end a"), "the build holds one of two places"
    assert events.index("start default:lane") > events.index("end default:build")
    assert events.index("start default:lane") > events.index("start b")


def test_a_failed_build_tells_the_waiting_lanes_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(scenarios.snapshot, "STATE", tmp_path / "state.json")
    log = tmp_path / "build.log"
    log.write_text("fatal: [default-deb12]: FAILED!\n")

    class Done:
        cpu_s = 1.0

    run = scenarios.Run(scenarios.STACK_BUILD, 900, log, proc=Done())  # type: ignore[arg-type]
    run.handle = log.open("rb")
    monkeypatch.setattr(scenarios.ledger, "record", lambda *a, **k: None)
    scenarios.finish(run, 2)
    with pytest.raises(scenarios.snapshot.SnapshotError, match="molecule exited 2"):
        scenarios.snapshot.built()


def test_only_the_first_stack_slot_repeats_the_converge_for_idempotence() -> None:
    first = scenarios.command(f"{scenarios.STACK}:release", 0)
    assert first == ["molecule", "test", "-s", scenarios.STACK]
    other = " ".join(scenarios.command(f"{scenarios.STACK}:engine", 1))
    assert "idempotence" not in other
    for step in ("create", "converge", "verify"):
        assert f"molecule {step} -s {scenarios.STACK}" in other
    assert other.rstrip().endswith(f"molecule destroy -s {scenarios.STACK}; exit $rc"), other
    assert scenarios.command("base", 2) == ["molecule", "test", "-s", "base"]
    assert scenarios.command("cd-test") == scenarios.SUITES["cd-test"]


def test_a_failed_run_is_explained_after_the_summary(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    lines = [f"noise {i}" for i in range(100)]
    lines[50] = "fatal: [host]: FAILED! => {msg: the thing broke}"
    lines[60] = "E   AssertionError: 3 failed of 10"
    lines[70] = "FAILED - RETRYING: [localhost]: Wait for instance(s) (300 retries left)."
    log.write_text("\n".join(lines))
    run = scenarios.Run("x", 10, log, why="molecule exited 1")
    got = scenarios.failure_lines(run)
    assert got[0] == "molecule exited 1"
    assert lines[50] in got and lines[60] in got
    assert lines[70] not in got, "a retry that went on is not why anything failed"
    assert got[-1] == "noise 99"
    # For the ledger's last word: the marked lines only, the last `most` of them.
    short = scenarios.failure_lines(run, most=1, tail=0)
    assert short == ["molecule exited 1", lines[60]]
    assert scenarios.failure_lines(scenarios.Run("y", 1, tmp_path / "none", why="w")) == ["w"]


def test_a_waiting_suite_starts_with_the_lanes_and_takes_no_place_among_the_roles(
    planned: list[Planned],
) -> None:
    (suite,) = scenarios.WITH_LANES
    assert scenarios.main([scenarios.STACK, suite, "base"]) == 0
    call = planned[-1]
    assert [r.name for r in call.runs] == ["base"]
    lanes = [f"{scenarios.STACK}:{'+'.join(lane)}" for lane in scenarios.STACK_LANES]
    assert [r.name for r in call.then] == [*lanes, suite]
    assert suite in [r.name for r in call.then if r.beside], "it knows it shares the machine"
    # Without the lanes it is one of the pool's runs, as before.
    assert scenarios.main([suite, "base"]) == 0
    call = planned[-1]
    assert sorted(r.name for r in call.runs) == sorted(["base", suite]) and call.then == []


def test_an_alone_only_scenario_is_skipped_beside_others_and_runs_alone(
    planned: list[Planned], capsys: pytest.CaptureFixture[str]
) -> None:
    name = next(iter(scenarios.ALONE_ONLY))
    assert scenarios.main(["base", name]) == 0
    out = capsys.readouterr().out
    assert [r.name for r in [*planned[-1].runs, *planned[-1].then]] == ["base"]
    assert f"SKIP  {name}" in out and f"make molecule SCENARIOS={name}" in out
    assert "molecule: 1 passed, 0 failed, 1 skipped" in out
    assert scenarios.main([name]) == 0
    assert [r.name for r in [*planned[-1].runs, *planned[-1].then]] == [name]
