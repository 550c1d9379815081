"""cd.yml's first job, executed (harness/gha.py): a run by hand from any ref but
master, or after CI for anything but a successful push to master, stops
before any job that reads a secret; the version must be a full commit sha; after
CI, only master's tip goes on (GitHub's API stands in as a local server)."""

from __future__ import annotations

import http.server
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from httpstub import serving

from harness import gha

ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
MASTER_HEAD = "fedcba9876543210fedcba9876543210fedcba98"


class MasterTip(http.server.BaseHTTPRequestHandler):
    """GitHub's "get a commit" with the sha media type: master's tip as plain text."""

    tip = SHA
    asked: ClassVar[list[tuple[str, str, str]]] = []

    def do_GET(self) -> None:
        MasterTip.asked.append(
            (self.path, self.headers.get("Accept", ""), self.headers.get("Authorization", ""))
        )
        if self.path != "/repos/o/archibald-ops/commits/master":
            self.send_error(404)
            return
        body = MasterTip.tip.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    MasterTip.tip, MasterTip.asked = SHA, []
    with serving(MasterTip) as port:
        yield f"http://127.0.0.1:{port}"


def guard(
    tmp_path: Path, github: dict[str, Any], inputs: dict[str, str], api_url: str = ""
) -> gha.JobResult:
    runner = gha.Runner(
        workflow_path=ROOT / ".github/workflows/cd.yml",
        workspace=tmp_path,
        github={
            "repository": "o/archibald-ops",
            "sha": MASTER_HEAD,
            # An address that never answers unless a test serves GitHub's API.
            "api_url": api_url or "http://127.0.0.1:9",
            "token": "ghs-test-token",
            **github,
        },
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
    assert result.outputs == {
        "version": MASTER_HEAD,
        "action": "rollback",
        "ref": MASTER_HEAD,
        "go": "true",
    }


@pytest.mark.parametrize("version", ["v1", "abc123", SHA.upper(), SHA + "0"])
def test_a_version_that_is_not_a_full_sha_is_refused(tmp_path: Path, version: str) -> None:
    result = guard(
        tmp_path, dispatch("refs/heads/master"), {"version": version, "action": "deploy"}
    )
    assert result.conclusion == "failure"
    assert result.step("what").outcome == "failure"


def test_after_a_successful_push_to_master_it_deploys_that_commit(tmp_path: Path, api: str) -> None:
    result = guard(tmp_path, after_ci("success", "push", "master"), {}, api)
    assert result.conclusion == "success", result.table()
    assert result.outputs == {"version": SHA, "action": "deploy", "ref": SHA, "go": "true"}
    _path, accept, auth = MasterTip.asked[0]
    assert accept == "application/vnd.github.sha" and auth == "Bearer ghs-test-token"


def test_after_ci_of_a_commit_master_has_moved_past_nothing_is_deployed(
    tmp_path: Path, api: str
) -> None:
    """CI runs that finish out of order, or a re-run of an old one, must not offer an
    approvable downgrade: the guard ends green, says why, and the plan is skipped."""
    MasterTip.tip = MASTER_HEAD
    result = guard(tmp_path, after_ci("success", "push", "master"), {}, api)
    assert result.conclusion == "success", result.table()
    assert result.outputs["go"] == "false"
    cd = yaml.safe_load((ROOT / ".github/workflows/cd.yml").read_text())
    assert cd["jobs"]["plan"]["if"] == "needs.guard.outputs.go == 'true'"


def test_without_an_answer_from_githubs_api_the_guard_fails(tmp_path: Path) -> None:
    result = guard(tmp_path, after_ci("success", "push", "master"), {})
    assert result.conclusion == "failure"
    assert result.step("what").outcome == "failure"
    assert result.outputs["version"] == ""


@pytest.mark.parametrize(
    ("conclusion", "event", "branch"),
    [("failure", "push", "master"), ("success", "pull_request", "master")],
)
def test_no_cd_after_a_failed_ci_or_a_pull_request(
    tmp_path: Path, conclusion: str, event: str, branch: str
) -> None:
    assert guard(tmp_path, after_ci(conclusion, event, branch), {}).conclusion == "skipped"
