"""Execute cd.yml's deploy job, step by step, against the CD sandbox host.

harness/gha.py runs the job as GitHub's runner does (shells, `if:`, step
outputs through $GITHUB_OUTPUT, $GITHUB_ENV/$GITHUB_PATH); the steps' scripts,
scripts/, the playbooks and the roles are the real ones. Stand-ins only for
what only GitHub has: the secrets store (the sandbox's deploy key, pinned host
key and a vault password), repository variables (the public URL and a shorter
verify poll), the plan job's outputs, the approval (none: the job just runs),
and the checkout/setup-python actions (the workspace is a copy of this tree).

Four releases on a new host, in order, each printed with its result and the
steps that ran (the first one's deploy.yml also provisions the host):
  1. good:            v1 -> success, no rollback;
  2. verify fails:    v2 over v1, its containers frozen right after the release
                      step -> the job fails, the rollback step runs, v1 serves again;
  3. gate fails:      bad-unhealthy -> the job fails at the release, traffic never
                      moved, the rollback step is skipped, v1 still serves;
  4. canary paused:   v3 with canary steps that pause -> the job succeeds with the
                      canary held at 30 %; the promote job takes it to everyone;
  then the plan job (a rollback's, before approval) reads the host with the
  observer's key only, and the key can run nothing but the observer;
  5. canary, verify fails: v2 with canary steps that pause, its containers frozen
                      right after the release step -> the job fails, the abort step
                      ends the canary, v3 serves everyone again and v2 is marked bad;
  6. promotion, verify fails: the promote job's own rollback;
  7. promotion cancelled: Cancel pressed while promote.yml runs a canary step ->
                      the abort step takes the cancelled run's lock and ends the
                      canary within GitHub's 5 minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cd import sandbox
from harness import faults, gha

ROOT = Path(__file__).resolve().parents[2]
CD = ROOT / ".github" / "workflows" / "cd.yml"
STATE = "/var/lib/archibald/archibald/state.json"
LOCK = "/var/lib/archibald/archibald/release.lock"
PROVISIONED = "/var/lib/archibald/provisioned.json"


def host_state() -> dict[str, Any]:
    out = subprocess.run(
        ["docker", "exec", sandbox.NAME, "cat", STATE], capture_output=True, text=True, check=True
    ).stdout
    state: dict[str, Any] = json.loads(out)
    return state


def provision_stamp() -> dict[str, Any]:
    """The host's stamp of its last full provisioning (playbooks/provision.yml)."""
    out = subprocess.run(
        ["docker", "exec", sandbox.NAME, "cat", PROVISIONED],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stamp: dict[str, Any] = json.loads(out)
    return stamp


def active_version() -> str:
    state = host_state()
    return str(state["colors"][state["active"]]["version"])


def containers_of(version: str) -> list[str]:
    out = subprocess.run(
        [
            "docker",
            "exec",
            sandbox.NAME,
            "docker",
            "ps",
            "--filter",
            f"label=org.archibald.version={version}",
            "--format",
            "{{.Names}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


@pytest.fixture(scope="module")
def host() -> Iterator[None]:
    sandbox.down()  # a host left by an earlier run would not be new
    took = sandbox.up()
    print(f"\ncd-test: new sandbox host, reached over SSH, in {took:.0f} s")
    yield
    if os.environ.get("CDTEST_KEEP") != "1":
        sandbox.down()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout of this tree (tracked and new files), with this tree's virtualenv."""
    ws = tmp_path_factory.mktemp("workspace")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = ROOT / name
        if source.is_file() or source.is_symlink():
            target = ws / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    (ws / ".venv").symlink_to(ROOT / ".venv")
    return ws


def run_deploy_job(
    workspace: Path,
    case: str,
    version: str,
    after_step: Any = None,
    job: str = "deploy",
    deploy_outputs: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    action: str = "deploy",
    canary_steps: list[dict[str, Any]] | None = None,
    cancel_in: tuple[str, float] | None = None,
) -> gha.JobResult:
    keys = sandbox.WORK / "keys"
    home = sandbox.WORK / "home"
    home.mkdir(parents=True, exist_ok=True)
    log_path = sandbox.WORK / f"{case}.log"
    log_file = log_path.open("w")
    sha = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    seen: list[dict[str, str]] = []

    def checkout(options: dict[str, str], _context: dict[str, Any]) -> dict[str, str]:
        seen.append(options)
        assert options.get("persist-credentials") == "false"
        assert options.get("ref") == sha
        return {}

    def setup_python(options: dict[str, str], _context: dict[str, Any]) -> dict[str, str]:
        assert options["python-version"] == "3.11"
        return {"python-version": "3.11"}

    def between_steps(step_id: str, step: gha.StepResult) -> None:
        # The runner trusts the public URL's certificate: the sandbox's own,
        # which the first provisioning (inside the release step) creates.
        if step_id == "release":
            sandbox.host_cert()
        if after_step is not None:
            after_step(step_id, step)

    runner = gha.Runner(
        workflow_path=CD,
        workspace=workspace,
        github={
            "sha": sha,
            "ref": "refs/heads/master",
            "event_name": "workflow_run",
            "repository": "archibald/archibald-ops",
            "repository_owner": "archibald",
            "run_id": "1",
            "actor": "cd-test",
            "server_url": "https://github.invalid",
        },
        actions={"actions/checkout": checkout, "actions/setup-python": setup_python},
        secrets=secrets
        or {
            "VPS_SSH_KEY": (keys / "id_ed25519").read_text(),
            "VPS_KNOWN_HOSTS": (keys / "known_hosts").read_text(),
            "ANSIBLE_VAULT_PASSWORD": sandbox.VAULT_PASSWORD,
        },
        variables={
            "PUBLIC_URL": sandbox.PUBLIC_URL,
            "VERIFY_ATTEMPTS": "5",
            "VERIFY_INTERVAL_S": "1",
        },
        needs={
            "guard": {"outputs": {"version": version, "action": action, "ref": sha, "go": "true"}},
            "plan": {
                "outputs": {
                    "version": version,
                    "action": "deploy",
                    "ref": sha,
                    "digest": sandbox.digest(version) if version else "",
                }
            },
            "deploy": {"outputs": deploy_outputs or {}},
        },
        env_overrides={"INVENTORY": str(sandbox.INVENTORY)},
        machine_env={
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            # The runner trusts the public URL's certificate (the sandbox's own).
            "CURL_CA_BUNDLE": str(sandbox.WORK / "public-ca.pem"),
            # The inventory's canary steps (sandbox.CANARY_VARS): none unless the case has some.
            sandbox.CANARY_ENV: json.dumps(canary_steps or []),
        },
        after_step=between_steps,
        cancel_in=cancel_in,
        log=lambda line: print(line, file=log_file, flush=True),
    )
    started = time.monotonic()
    try:
        result = runner.run_job(job)
    finally:
        log_file.close()
    print(
        f"\ncd-test {case}: {job} {version} -> job {result.conclusion} in "
        f"{time.monotonic() - started:.0f} s; live now: {active_version()} (log {log_path})\n"
        + result.table()
    )
    assert seen, "the checkout stand-in was never called"
    return result


ALWAYS = ["__0", "__1", "venv", "access", "before", "release"]
PROMOTE = ["__0", "__1", "venv", "access", "before", "promote"]
WATCHDOG = "archibald-watchdog"


@contextmanager
def frozen_after(
    step_id: str = "release", version: str = "v2"
) -> Iterator[tuple[Callable[[str, gha.StepResult], None], list[str]]]:
    """An after_step for run_deploy_job, and the containers it froze: once the
    step `step_id` succeeded, `version` dies (its containers frozen), so the public
    check fails. The host's watchdog would move traffic back by itself within seconds
    (test_14_watchdog proves it): it is stopped, as an operator pauses it
    (OPERATIONS 2.9), so that CD's own rollback or abort is what is tested.
    Thawed and the watchdog started again when the block ends, however it ends."""
    run = faults.docker_exec(sandbox.NAME)
    frozen: list[str] = []

    def freeze(done: str, step: gha.StepResult) -> None:
        if done == step_id and step.outcome == "success":
            rc, out = run(["systemctl", "stop", WATCHDOG])
            assert rc == 0, f"stopping the sandbox's watchdog: {out}"
            frozen.extend(faults.freeze(run, containers_of(version)))

    try:
        yield freeze, frozen
    finally:
        faults.thaw(run, frozen)
        run(["systemctl", "start", WATCHDOG])


def test_good_release_passes_without_rollback(host: None, workspace: Path) -> None:
    result = run_deploy_job(workspace, "good", "v1")
    assert result.conclusion == "success"
    assert result.ran() == [*ALWAYS, "verify", "held", "summary", "cleanup"]
    assert result.step("verify").outputs == {"color": "blue", "version": "v1"}
    assert result.outputs["paused"] == "false"
    assert result.step("before").outputs["active_version"] == ""
    assert active_version() == "v1"
    assert "| before | none | none |" in result.summary
    assert "Automatic rollback: skipped." in result.summary


def test_failed_verify_fails_the_job_and_rolls_back(host: None, workspace: Path) -> None:
    # The first job provisioned the host (or found it provisioned from this
    # tree and inventory); this one has nothing new to provision and skips it.
    provisioned = provision_stamp()
    with frozen_after() as (freeze, frozen):
        result = run_deploy_job(workspace, "verify-fails", "v2", after_step=freeze)
    assert frozen, "the release step did not succeed, so the fault was never injected"
    assert result.conclusion == "failure"
    assert result.step("release").outcome == "success"
    assert provision_stamp() == provisioned, "a deploy with nothing new provisioned the host again"
    seconds = result.step("release").seconds
    print(f"\ncd-test: the release step, provisioning skipped, took {seconds:.0f} s")
    assert result.step("verify").outcome == "failure"
    assert result.step("verify").code == 1
    assert result.step("after").outputs["active_version"] == "v2"
    assert result.step("rollback").outcome == "success"
    assert result.ran() == [*ALWAYS, "verify", "after", "rollback", "summary", "cleanup"]
    assert active_version() == "v1"
    assert "Automatic rollback: success." in result.summary


def test_failed_gate_fails_the_job_and_does_not_roll_back(host: None, workspace: Path) -> None:
    result = run_deploy_job(workspace, "gate-fails", "bad-unhealthy")
    assert result.conclusion == "failure"
    assert result.step("release").outcome == "failure"
    assert result.step("release").code == 2  # ansible-playbook: a task failed
    assert result.step("verify").outcome == "skipped"
    assert result.step("after").outputs["active_version"] == "v1"
    assert result.step("rollback").outcome == "skipped"
    assert result.ran() == [*ALWAYS, "after", "summary", "cleanup"]
    assert active_version() == "v1"


def test_a_paused_canary_waits_for_the_promote_job(host: None, workspace: Path) -> None:
    """With canary steps that pause (the inventory's, sandbox.CANARY_VARS), the deploy
    job ends with the canary held (its verify asked the canary itself) and says so;
    the promote job, behind its own approval, takes it to everyone."""
    steps = [{"weight": 30, "analysis_s": 3, "pause": True}, {"weight": 60, "analysis_s": 3}]
    provisioned = provision_stamp()
    deployed = run_deploy_job(workspace, "canary-paused", "v3", canary_steps=steps)
    assert deployed.conclusion == "success"
    assert deployed.ran() == [*ALWAYS, "verify", "held", "summary", "cleanup"]
    assert deployed.step("verify").outputs["version"] == "v3"
    assert deployed.outputs == {"paused": "true", "weight": "30"}
    assert "Canary paused at 30 % of clients" in deployed.summary
    assert active_version() == "v1" and host_state()["canary"]["version"] == "v3"
    # The steps come from the runner's environment, not a changed inventory file:
    # the deploy released without provisioning the host again.
    assert provision_stamp() == provisioned
    promoted = run_deploy_job(
        workspace,
        "canary-promoted",
        "v3",
        job="promote",
        deploy_outputs=deployed.outputs,
        canary_steps=steps,
    )
    assert promoted.conclusion == "success"
    assert promoted.ran() == [*PROMOTE, "verify", "summary", "cleanup"]
    assert active_version() == "v3" and host_state()["canary"] is None


def observer_ssh(*extra: str) -> subprocess.CompletedProcess[str]:
    """ssh to the sandbox as the observer, with its key and the pinned host key."""
    keys = sandbox.WORK / "keys"
    return subprocess.run(
        [
            "ssh",
            *("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"),
            *("-o", f"UserKnownHostsFile={keys / 'known_hosts'}", "-o", "IdentitiesOnly=yes"),
            *("-i", str(sandbox.observer_key()), "-p", str(sandbox.SSH_PORT)),
            *extra,
        ],
        capture_output=True,
        # ssh makes the stdin it inherits non-blocking, and Ansible then refuses it.
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_plan_reads_the_host_through_the_observer_key_only(host: None, workspace: Path) -> None:
    """The plan job runs before anyone approved: with the observer's key and no deploy
    key or vault password it reads the host and plans, and the key can do nothing else."""
    before = host_state()
    keys = sandbox.WORK / "keys"
    result = run_deploy_job(
        workspace,
        "plan-rollback",
        "",
        job="plan",
        action="rollback",
        secrets={
            "VPS_OBSERVER_KEY": sandbox.observer_key().read_text(),
            "VPS_KNOWN_HOSTS": (keys / "known_hosts").read_text(),
        },
    )
    assert result.conclusion == "success", result.table()
    assert result.step("image").outcome == "skipped"  # a rollback has no image to resolve
    live = before["active"]
    warm = next(c for c in before["colors"] if c != live)
    warm_version = before["colors"][warm]["version"]
    assert f"**plan: roll back to {warm_version} on {warm}**" in result.summary
    assert "read-only observer, nothing changed" in result.summary
    assert host_state() == before, "the plan changed the host's record"

    # Whatever the client asks to run, the key runs the observer; it cannot
    # forward a port or reach anything else, and its user has one sudo rule.
    asked = observer_ssh("archibald-observer@127.0.0.1", "id; touch /tmp/observer-was-here")
    assert asked.returncode == 0, asked.stderr
    facts = json.loads(asked.stdout)
    assert facts["state"]["active"] == live and "uid=" not in asked.stdout
    forward = observer_ssh("-W", "127.0.0.1:22", "archibald-observer@127.0.0.1")
    assert forward.returncode != 0, "the observer's key may forward connections"
    listed = subprocess.run(
        ["docker", "exec", sandbox.NAME, "sudo", "-l", "-U", "archibald-observer"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rules = [line.strip() for line in listed.splitlines() if "NOPASSWD" in line]
    assert rules == [
        "(root) NOPASSWD: /usr/local/lib/archibald-release/watchdog.py --observe "
        "/etc/archibald-watchdog.json"
    ], listed
    groups = subprocess.run(
        ["docker", "exec", sandbox.NAME, "id", "-nG", "archibald-observer"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "docker" not in groups and "sudo" not in groups, groups
    touched = subprocess.run(
        ["docker", "exec", sandbox.NAME, "test", "-e", "/tmp/observer-was-here"], check=False
    )
    assert touched.returncode != 0, "the observer's key ran the command the client asked for"


def test_a_failed_verify_during_a_canary_aborts_it(host: None, workspace: Path) -> None:
    """A canary nobody approved must not stay on its share of clients: the deploy job's
    verify fails while the canary is paused (its containers frozen), and the job aborts
    it, so everyone is back on the colour that served before."""
    before = active_version()
    steps = [{"weight": 30, "analysis_s": 3, "pause": True}]
    with frozen_after() as (freeze, frozen):
        result = run_deploy_job(
            workspace, "canary-verify-fails", "v2", after_step=freeze, canary_steps=steps
        )
    assert frozen, "the release step did not succeed, so the fault was never injected"
    assert result.conclusion == "failure"
    assert result.step("verify").outcome == "failure"
    assert result.step("after").outputs["canary_version"] == "v2"
    assert result.step("rollback").outcome == "skipped"  # traffic never moved as a whole
    assert result.step("abort").outcome == "success"
    assert result.ran() == [*ALWAYS, "verify", "after", "abort", "summary", "cleanup"]
    state = host_state()
    assert state["canary"] is None and active_version() == before
    assert "v2" in state["bad_versions"]
    assert "The canary of v2 was left in progress by the failure: abort success." in result.summary


def test_a_promotion_that_fails_its_verify_is_rolled_back(host: None, workspace: Path) -> None:
    """The promote job's own failure (issue 28): the canary reached everyone, then the
    public check fails (the promoted colour frozen). The job rolls back to the version
    that served before the canary, as the deploy job does, and says so."""
    before = active_version()
    steps = [{"weight": 30, "analysis_s": 3, "pause": True}]
    deployed = run_deploy_job(workspace, "canary-before-a-bad-promotion", "v1", canary_steps=steps)
    assert deployed.conclusion == "success" and deployed.outputs["paused"] == "true"
    with frozen_after("promote", "v1") as (freeze, frozen):
        promoted = run_deploy_job(
            workspace,
            "promotion-verify-fails",
            "v1",
            after_step=freeze,
            job="promote",
            deploy_outputs=deployed.outputs,
            canary_steps=steps,
        )
    assert frozen, "the promote step did not succeed, so the fault was never injected"
    assert promoted.conclusion == "failure"
    assert promoted.step("verify").outcome == "failure"
    assert promoted.step("after").outputs["active_version"] == "v1"
    assert promoted.step("rollback").outcome == "success"
    assert promoted.step("abort").outcome == "skipped"
    assert promoted.ran() == [*PROMOTE, "verify", "after", "rollback", "summary", "cleanup"]
    assert active_version() == before and host_state()["canary"] is None
    assert f"v1 reached everyone and then failed: rolled back to {before}, success." in (
        promoted.summary
    )


# GitHub kills a cancelled job this long after the cancel.
CANCEL_WINDOW_S = 300
# Into the promote step: past the switch to its second canary step, inside its analysis.
CANCEL_AFTER_S = 20


def test_a_promotion_cancelled_between_its_steps_ends_the_canary(
    host: None, workspace: Path
) -> None:
    """Issue 28: Cancel pressed while promote.yml runs a canary step. The runner's SIGINT
    reaches ansible-playbook (scripts/ci-playbook.sh), which stops without running its
    `always:` sections, so the release lock stays held by the cancelled run; the job's
    abort step (scripts/ci-undo.sh, the same CI run) takes that lock over and sends
    everyone back to the version before the canary, within GitHub's 5 minutes."""
    fresh = subprocess.run(["docker", "exec", sandbox.NAME, "test", "-e", STATE]).returncode
    if fresh:  # run alone (-k cancelled): a version to go back to first
        assert run_deploy_job(workspace, "a-version-before-the-canary", "v1").conclusion == (
            "success"
        )
    before = active_version()
    bad = host_state().get("bad_versions") or {}
    version = next(v for v in ("v1", "v2", "v3") if v != before and v not in bad)
    steps = [
        {"weight": 20, "analysis_s": 3, "pause": True},
        {"weight": 50, "analysis_s": 60},
    ]
    deployed = run_deploy_job(workspace, "canary-before-a-cancel", version, canary_steps=steps)
    assert deployed.conclusion == "success" and deployed.outputs["paused"] == "true"
    promoted = run_deploy_job(
        workspace,
        "promotion-cancelled",
        version,
        job="promote",
        deploy_outputs=deployed.outputs,
        canary_steps=steps,
        cancel_in=("promote", CANCEL_AFTER_S),
    )
    assert promoted.conclusion == "cancelled", "the promote step ended before the cancel"
    print(
        f"cd-test promotion-cancelled: the steps after the cancel took "
        f"{promoted.after_cancel_s or 0:.0f} s (GitHub kills the job at {CANCEL_WINDOW_S} s)"
    )
    assert promoted.step("promote").outcome == "cancelled"
    assert promoted.step("after").outputs["canary_version"] == version
    assert promoted.step("abort").outcome == "success", promoted.table()
    assert promoted.ran() == [*PROMOTE, "after", "abort", "summary", "cleanup"]
    assert promoted.after_cancel_s is not None and promoted.after_cancel_s < CANCEL_WINDOW_S
    # Nothing of the cancelled playbook runs on: ci-playbook.sh waited for it.
    left = subprocess.run(
        ["pgrep", "-f", f"promote.yml -i {sandbox.INVENTORY}"], capture_output=True, text=True
    ).stdout.split()
    assert not left, f"ansible-playbook promote.yml still runs after the cancel: {left}"
    state = host_state()
    assert state["canary"] is None and active_version() == before
    assert version in state["bad_versions"]
    rc, lock = faults.docker_exec(sandbox.NAME)(["cat", LOCK])
    assert rc != 0, f"the release lock is still held after the abort: {lock}"
    assert f"The canary of {version} was left in progress by the failure: abort success." in (
        promoted.summary
    )
