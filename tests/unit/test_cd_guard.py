"""cd.yml's first job, executed (harness/gha.py): a run by hand from any ref but
master, or after CI for anything but a successful push to master, stops
before any job that reads a secret; the version must be a full commit sha."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from harness import gha

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
MASTER_HEAD = "fedcba9876543210fedcba9876543210fedcba98"


def guard(tmp_path: Path, github: dict[str, Any], inputs: dict[str, str]) -> gha.JobResult:
    runner = gha.Runner(
        workflow_path=ROOT / ".github/workflows/cd.yml",
        workspace=tmp_path,
        github={"repository": "o/archibald-ops", "sha": MASTER_HEAD, **github},
        actions={},
        inputs=inputs,
        machine_env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        log=lambda _line: None,
    )
    return runner.run_job("guard")


def dispatch(ref: str) -> dict[str, Any]:
    return {"event_name": "workflow_dispatch", "ref": ref, "event": {}}


def after_ci(conclusion: str, event: str, branch: str) -> dict[str, Any]:
    run = {
        "conclusion": conclusion,
        "event": event,
        "head_branch": branch,
        "head_sha": SHA,
        "head_repository": {"full_name": "o/archibald-ops"},
    }
    return {
        "event_name": "workflow_run",
        "ref": "refs/heads/master",
        "event": {"workflow_run": run},
    }


def test_dispatch_from_another_branch_is_refused(tmp_path: Path) -> None:
    result = guard(tmp_path, dispatch("refs/heads/feature"), {"version": SHA, "action": "deploy"})
    assert result.conclusion == "failure"
    assert result.steps[0].code == 1
    assert result.ran() == ["__0"]
    assert result.outputs["version"] == ""


def test_dispatch_from_master_decides_version_and_action(tmp_path: Path) -> None:
    result = guard(tmp_path, dispatch("refs/heads/master"), {"version": "", "action": "rollback"})
    assert result.conclusion == "success", result.table()
    assert result.outputs == {"version": MASTER_HEAD, "action": "rollback", "ref": MASTER_HEAD}


@pytest.mark.parametrize("version", ["v1", "abc123", SHA.upper(), SHA + "0"])
def test_a_version_that_is_not_a_full_sha_is_refused(tmp_path: Path, version: str) -> None:
    result = guard(
        tmp_path, dispatch("refs/heads/master"), {"version": version, "action": "deploy"}
    )
    assert result.conclusion == "failure"
    assert result.step("what").outcome == "failure"


def test_after_a_successful_push_to_master_it_deploys_that_commit(tmp_path: Path) -> None:
    result = guard(tmp_path, after_ci("success", "push", "master"), {})
    assert result.conclusion == "success", result.table()
    assert result.outputs == {"version": SHA, "action": "deploy", "ref": SHA}


@pytest.mark.parametrize(
    ("conclusion", "event", "branch"),
    [("failure", "push", "master"), ("success", "pull_request", "master")],
)
def test_no_cd_after_a_failed_ci_or_a_pull_request(
    tmp_path: Path, conclusion: str, event: str, branch: str
) -> None:
    assert guard(tmp_path, after_ci(conclusion, event, branch), {}).conclusion == "skipped"
