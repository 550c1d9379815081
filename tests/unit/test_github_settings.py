"""scripts/github-settings.py against a stand-in of GitHub's REST API (a local
server that keeps the environments and rulesets it is given): a dry run says what
it would change and changes nothing; --apply makes the repository what CD needs;
a second run finds nothing to do; a wrong setting made by hand is put right."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from httpstub import serving

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "github-settings.py"
REPO = "o/archibald-ops"
USERS = {"alice": 101, "bob": 202}


class FakeGitHub(http.server.BaseHTTPRequestHandler):
    environments: ClassVar[dict[str, dict[str, Any]]] = {}
    branches: ClassVar[dict[str, list[str]]] = {}
    rulesets: ClassVar[dict[int, dict[str, Any]]] = {}
    writes: ClassVar[list[str]] = []

    def answer(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def route(self, method: str) -> None:
        if self.headers.get("Authorization") != "Bearer test-token":
            return self.answer(401, {"message": "Bad credentials"})
        path = self.path
        if method != "GET":
            FakeGitHub.writes.append(f"{method} {path}")
        if m := re.fullmatch(r"/users/(\w+)", path):
            user = USERS.get(m.group(1))
            return self.answer(200, {"id": user}) if user else self.answer(404)
        if m := re.fullmatch(rf"/repos/{REPO}/environments/([\w-]+)", path):
            name = m.group(1)
            if method == "PUT":
                body = self.body()
                rules: list[dict[str, Any]] = [{"type": "branch_policy"}]
                if body.get("reviewers"):
                    rules.append(
                        {
                            "type": "required_reviewers",
                            "prevent_self_review": body.get("prevent_self_review", False),
                            "reviewers": [
                                {"type": r["type"], "reviewer": {"id": r["id"]}}
                                for r in body["reviewers"]
                            ],
                        }
                    )
                FakeGitHub.environments[name] = {
                    "name": name,
                    "deployment_branch_policy": body.get("deployment_branch_policy"),
                    "protection_rules": rules,
                }
                FakeGitHub.branches.setdefault(name, [])
                return self.answer(200, FakeGitHub.environments[name])
            env = FakeGitHub.environments.get(name)
            return self.answer(200, env) if env else self.answer(404)
        if m := re.fullmatch(
            rf"/repos/{REPO}/environments/([\w-]+)/deployment-branch-policies", path
        ):
            name = m.group(1)
            if method == "POST":
                FakeGitHub.branches[name].append(self.body()["name"])
                return self.answer(200, {})
            names = FakeGitHub.branches.get(name, [])
            return self.answer(200, {"branch_policies": [{"name": n} for n in names]})
        if path == f"/repos/{REPO}/rulesets":
            if method == "POST":
                new_id = len(FakeGitHub.rulesets) + 1
                FakeGitHub.rulesets[new_id] = {"id": new_id, **self.body()}
                return self.answer(201, FakeGitHub.rulesets[new_id])
            listed = [{"id": r["id"], "name": r["name"]} for r in FakeGitHub.rulesets.values()]
            return self.answer(200, listed)
        if m := re.fullmatch(rf"/repos/{REPO}/rulesets/(\d+)", path):
            rid = int(m.group(1))
            if method == "PUT":
                FakeGitHub.rulesets[rid] = {"id": rid, **self.body()}
            return self.answer(200, FakeGitHub.rulesets[rid])
        return self.answer(404)

    def do_GET(self) -> None:
        self.route("GET")

    def do_PUT(self) -> None:
        self.route("PUT")

    def do_POST(self) -> None:
        self.route("POST")

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    FakeGitHub.environments, FakeGitHub.branches = {}, {}
    FakeGitHub.rulesets, FakeGitHub.writes = {}, []
    with serving(FakeGitHub) as port:
        yield f"http://127.0.0.1:{port}"


def settings(api: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), REPO, "--reviewer", "alice", "--reviewer", "bob", *args],
        env={**os.environ, "GH_TOKEN": "test-token", "GITHUB_API_URL": api},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_a_dry_run_says_what_it_would_change_and_changes_nothing(api: str) -> None:
    done = settings(api)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "would create environment production-promote" in done.stdout
    assert "would create ruleset master" in done.stdout
    assert FakeGitHub.writes == []


def test_apply_makes_the_repository_what_cd_needs_and_a_rerun_finds_nothing(api: str) -> None:
    done = settings(api, "--apply")
    assert done.returncode == 0, done.stdout + done.stderr
    envs = FakeGitHub.environments
    # Every environment cd.yml names exists before a workflow could create it bare.
    cd = yaml.safe_load((ROOT / ".github/workflows/cd.yml").read_text())
    named = {
        (job["environment"]["name"] if isinstance(job["environment"], dict) else job["environment"])
        for job in cd["jobs"].values()
        if "environment" in job
    }
    assert named == set(envs)
    for name in ("production", "production-promote"):
        (rule,) = [r for r in envs[name]["protection_rules"] if r["type"] == "required_reviewers"]
        assert rule["prevent_self_review"] is True
        assert sorted(r["reviewer"]["id"] for r in rule["reviewers"]) == [101, 202]
    assert all(
        r["type"] != "required_reviewers" for r in envs["production-plan"]["protection_rules"]
    )
    assert all(FakeGitHub.branches[name] == ["master"] for name in envs)
    (ruleset,) = FakeGitHub.rulesets.values()
    checks = next(r for r in ruleset["rules"] if r["type"] == "required_status_checks")
    assert checks["parameters"]["required_status_checks"] == [{"context": "CI passed"}]
    ci = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text())
    assert ci["jobs"]["passed"]["name"] == "CI passed"
    writes = len(FakeGitHub.writes)
    again = settings(api)
    assert again.returncode == 0 and "nothing to change" in again.stdout
    assert len(FakeGitHub.writes) == writes


def test_a_reviewer_removed_by_hand_is_put_back(api: str) -> None:
    assert settings(api, "--apply").returncode == 0
    rule = next(
        r
        for r in FakeGitHub.environments["production"]["protection_rules"]
        if r["type"] == "required_reviewers"
    )
    rule["prevent_self_review"] = False
    done = settings(api)
    assert done.returncode == 1 and "would update environment production:" in done.stdout
    assert settings(api, "--apply").returncode == 0
    assert settings(api).returncode == 0


def test_an_unknown_reviewer_or_a_bad_token_stops_with_a_reason(api: str) -> None:
    unknown = subprocess.run(
        [sys.executable, str(SCRIPT), REPO, "--reviewer", "mallory"],
        env={**os.environ, "GH_TOKEN": "test-token", "GITHUB_API_URL": api},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert unknown.returncode == 2 and "no GitHub user 'mallory'" in unknown.stderr
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), REPO, "--reviewer", "alice"],
        env={**os.environ, "GH_TOKEN": "wrong", "GITHUB_API_URL": api},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert bad.returncode == 2 and "HTTP 401" in bad.stderr
