"""The GitHub Actions job runner behind the executed CD test (harness/gha.py)
follows GitHub's documented rules: expressions, conditions, shells, step files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import gha

ROOT = Path(__file__).resolve().parents[2]
CONTEXT: dict[str, Any] = {
    "env": {"ACTION": "deploy", "VERSION": "v2", "EMPTY": ""},
    "vars": {},
    "steps": {
        "before": {"outcome": "success", "outputs": {"active_version": "v1"}},
        "after": {"outcome": "success", "outputs": {"active_version": "v2"}},
        "skipped": {"outcome": "skipped", "outputs": {}},
    },
    "github": {"ref": "refs/heads/master", "event_name": "workflow_dispatch"},
}


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("env.ACTION == 'deploy'", True),
        ("env.ACTION == 'DEPLOY'", True),  # strings compare case-insensitively
        ("env.action", "deploy"),  # so do context keys
        ("vars.PUBLIC_URL || 'https://example.test'", "https://example.test"),
        ("env.EMPTY || 'fallback'", "fallback"),
        ("env.VERSION && 'yes'", "yes"),
        ("env.EMPTY && 'yes'", ""),
        ("steps.skipped.outputs.active_version == env.VERSION", False),
        ("steps.skipped.outputs.active_version", None),
        ("steps['after'].outputs.active_version != steps.before.outputs.active_version", True),
        ("!(env.ACTION == 'rollback')", True),
        ("1 == '1'", True),
        ("null == 0", True),
        ("contains(github.ref, 'master')", True),
        ("startsWith(github.ref, 'refs/heads/')", True),
        ("format('{0}-{1}', env.ACTION, env.VERSION)", "deploy-v2"),
        ("'it''s'", "it's"),
    ],
)
def test_expressions(expression: str, value: Any) -> None:
    assert gha.evaluate(expression, CONTEXT) == value


def test_unknown_context_is_an_error() -> None:
    with pytest.raises(gha.ExpressionError, match="unknown context 'stepz'"):
        gha.evaluate("stepz.before.outcome", CONTEXT)


@pytest.mark.parametrize(
    ("expression", "status", "runs"),
    [
        (None, "success", True),
        (None, "failure", False),
        ("env.ACTION == 'deploy'", "failure", False),  # implicit success() &&
        ("failure() && env.ACTION == 'deploy'", "failure", True),
        ("failure() && env.ACTION == 'deploy'", "cancelled", False),
        ("(failure() || cancelled()) && env.ACTION == 'deploy'", "cancelled", True),
        ("always()", "cancelled", True),
        ("${{ always() && steps.before.outcome == 'success' }}", "failure", True),
    ],
)
def test_conditions(expression: str | None, status: str, runs: bool) -> None:
    assert gha.condition(expression, CONTEXT, status) is runs


def test_command_file_forms() -> None:
    text = "color=blue\nversion=v2\nlog<<EOF_1\nline one\nline=two\nEOF_1\nempty=\n"
    assert gha.parse_command_file(text) == {
        "color": "blue",
        "version": "v2",
        "log": "line one\nline=two",
        "empty": "",
    }
    with pytest.raises(ValueError, match="no closing"):
        gha.parse_command_file("log<<EOF\nunterminated\n")


def _workflow(tmp_path: Path, defaults: dict[str, Any] | None, steps: list[dict[str, Any]]) -> Path:
    workflow: dict[str, Any] = {
        "name": "t",
        "on": "push",
        "jobs": {"j": {"runs-on": "x", "steps": steps}},
    }
    if defaults is not None:
        workflow["defaults"] = defaults
    path = tmp_path / "w.yml"
    path.write_text(yaml.safe_dump(workflow))
    return path


def _runner(path: Path, tmp_path: Path) -> gha.Runner:
    import os

    return gha.Runner(
        workflow_path=path,
        workspace=tmp_path,
        github={"sha": "abc", "ref": "refs/heads/master"},
        actions={},
        machine_env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        log=lambda _line: None,
    )


PIPED = [
    {"id": "verify", "run": 'false | tee -a "$GITHUB_OUTPUT"'},
    {"id": "rollback", "if": "failure()", "run": "echo rolled back"},
]


def test_a_failing_command_before_a_pipe_passes_without_pipefail(tmp_path: Path) -> None:
    # GitHub's default `bash -e {0}`: the defect of issue 13, reproduced.
    result = _runner(_workflow(tmp_path, None, PIPED), tmp_path).run_job("j")
    assert result.conclusion == "success"
    assert result.ran() == ["verify"]
    assert result.step("verify").code == 0


def test_shell_bash_fails_the_pipe_and_runs_the_failure_step(tmp_path: Path) -> None:
    result = _runner(_workflow(tmp_path, {"run": {"shell": "bash"}}, PIPED), tmp_path).run_job("j")
    assert result.conclusion == "failure"
    assert result.ran() == ["verify", "rollback"]
    assert result.step("verify").outcome == "failure"
    assert result.step("verify").code == 1
    assert "rc=1" in result.table()


def test_outputs_env_and_path_reach_later_steps(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "hello-tool"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o755)
    steps: list[dict[str, Any]] = [
        {
            "id": "a",
            "run": f'echo "color=green" >>"$GITHUB_OUTPUT"\necho "FROM_A=1" >>"$GITHUB_ENV"\n'
            f'echo "{bin_dir}" >>"$GITHUB_PATH"',
        },
        {
            "id": "b",
            "if": "steps.a.outputs.color == 'green'",
            "env": {"COLOR": "${{ steps.a.outputs.color }}"},
            "run": '[ "$COLOR" = green ] && [ "$FROM_A" = 1 ] && hello-tool',
        },
    ]
    result = _runner(_workflow(tmp_path, {"run": {"shell": "bash"}}, steps), tmp_path).run_job("j")
    assert result.conclusion == "success", result.table()
    assert result.ran() == ["a", "b"]


def test_the_real_rollback_condition_covers_a_cancelled_run() -> None:
    cd = yaml.safe_load((ROOT / ".github/workflows/cd.yml").read_text())
    steps = {s.get("id"): s for s in cd["jobs"]["deploy"]["steps"]}
    moved = dict(CONTEXT)
    for status in ("failure", "cancelled"):
        assert gha.condition(steps["rollback"]["if"], moved, status), status
    assert not gha.condition(steps["rollback"]["if"], moved, "success")
    unmoved = dict(
        CONTEXT, steps=dict(CONTEXT["steps"], after={"outputs": {"active_version": "v1"}})
    )
    assert not gha.condition(steps["rollback"]["if"], unmoved, "failure")


def test_a_step_over_its_timeout_is_stopped_as_github_does_and_fails(tmp_path: Path) -> None:
    """timeout-minutes: SIGINT to the step's shell, SIGTERM 7.5 s later, the rest of
    its process group killed 2.5 s after that; the step fails and failure() steps run."""
    steps: list[dict[str, Any]] = [
        {
            "id": "release",
            "timeout-minutes": 0.02,  # 1.2 s
            "run": "trap 'echo got INT' INT\nsleep 60 & wait || true\nsleep 60 & wait",
        },
        {"id": "after", "if": "failure()", "run": "echo cleaned up"},
    ]
    started = time.monotonic()
    result = _runner(_workflow(tmp_path, {"run": {"shell": "bash"}}, steps), tmp_path).run_job("j")
    took = time.monotonic() - started
    assert result.step("release").outcome == "failure"
    assert result.ran() == ["release", "after"]
    # Its trap took the SIGINT and it went on: SIGTERM and the kill ended it.
    assert 1.2 + 7.5 <= took < 1.2 + 7.5 + 2.5 + 5, took


def test_a_step_within_its_timeout_is_not_touched(tmp_path: Path) -> None:
    steps = [{"id": "quick", "timeout-minutes": 1, "run": "sleep 0.2; echo ok"}]
    result = _runner(_workflow(tmp_path, None, steps), tmp_path).run_job("j")
    assert result.conclusion == "success" and result.step("quick").code == 0


def test_a_cancelled_run_stops_the_step_and_runs_only_cancelled_and_always_steps(
    tmp_path: Path,
) -> None:
    """Cancel, as a person does in GitHub's UI while a step runs: that step is stopped as
    GitHub stops it and ends cancelled, the job is cancelled, and after it only steps
    whose `if:` calls cancelled() or always() run; the seconds they took are kept (GitHub
    kills the job 5 minutes after the cancel)."""
    steps: list[dict[str, Any]] = [
        {"id": "promote", "run": "sleep 60"},
        {"id": "verify", "run": "echo never"},
        {"id": "after", "if": "failure() || cancelled()", "run": "echo undo"},
        {"id": "failed_only", "if": "failure()", "run": "echo never"},
        {"id": "cleanup", "if": "always()", "run": "echo clean"},
    ]
    runner = _runner(_workflow(tmp_path, {"run": {"shell": "bash"}}, steps), tmp_path)
    runner.cancel_in = ("promote", 1.0)
    started = time.monotonic()
    result = runner.run_job("j")
    assert time.monotonic() - started < 10
    assert result.conclusion == "cancelled"
    assert result.step("promote").outcome == "cancelled"
    assert result.ran() == ["promote", "after", "cleanup"]
    assert result.after_cancel_s is not None and 0 <= result.after_cancel_s < 5
