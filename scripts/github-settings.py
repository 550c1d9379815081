#!/usr/bin/env python3
"""GitHub's settings for this repository, as code: the environments CD runs in
and the ruleset on master. Prints what it would change; --apply changes it.

    GH_TOKEN=... scripts/github-settings.py owner/repo --reviewer alice [--reviewer bob]
    GH_TOKEN=... scripts/github-settings.py owner/repo --reviewer alice --apply

What it sets (DESIRED below is the one owner of it; OPERATIONS.md 1.3 says why):

- environment `production-plan`: master only, no reviewer (the read-only plan);
- environments `production` and `production-promote`: master only, the
  reviewers, and prevent_self_review (whoever started the run cannot approve
  it). GitHub creates an environment that a workflow names on its first use,
  with no reviewer and no secret: `production-promote` must exist first;
- ruleset `master`: changes through a reviewed pull request, and the one
  required check, ci.yml's aggregate `CI passed`.

Secrets are not set here (their values never pass through a script): see
OPERATIONS.md 1.3. The token needs the repository's administration permission.
Exit status: 0 when nothing is (or was) left to change, 1 when a dry run found
changes, 2 on a usage or API error. GITHUB_API_URL overrides the API's address.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

API = "https://api.github.com"
BRANCH = "master"
REQUIRED_CHECK = "CI passed"  # ci.yml's aggregate job (its `name:`)
RULESET = "master"
# Environment -> whether it needs a reviewer's approval.
ENVIRONMENTS = {"production-plan": False, "production": True, "production-promote": True}


class ApiError(Exception):
    pass


class Api:
    """The few REST calls this needs, with the token; 404 comes back as None."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base.rstrip("/"), token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {self.token}",
                "X-GitHub-Api-Version": "2022-11-28",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                text = answer.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and method == "GET":
                return None
            detail = exc.read().decode(errors="replace")[:300]
            raise ApiError(f"{method} {path}: HTTP {exc.code} {detail}") from exc
        except OSError as exc:
            raise ApiError(f"{method} {path}: {exc}") from exc
        return json.loads(text) if text else {}


def desired_environment(name: str, reviewer_ids: list[int]) -> dict[str, Any]:
    """The body of PUT /environments/{name}."""
    body: dict[str, Any] = {
        "deployment_branch_policy": {"protected_branches": False, "custom_branch_policies": True}
    }
    if ENVIRONMENTS[name]:
        body["reviewers"] = [{"type": "User", "id": i} for i in sorted(reviewer_ids)]
        body["prevent_self_review"] = True
    return body


def desired_ruleset() -> dict[str, Any]:
    return {
        "name": RULESET,
        "target": "branch",
        "enforcement": "active",
        "conditions": {"ref_name": {"include": [f"refs/heads/{BRANCH}"], "exclude": []}},
        "rules": [
            {
                "type": "pull_request",
                "parameters": {
                    "required_approving_review_count": 1,
                    "dismiss_stale_reviews_on_push": True,
                    "require_code_owner_review": False,
                    "require_last_push_approval": True,
                    "required_review_thread_resolution": False,
                },
            },
            {
                "type": "required_status_checks",
                "parameters": {
                    "strict_required_status_checks_policy": False,
                    "required_status_checks": [{"context": REQUIRED_CHECK}],
                },
            },
        ],
    }


def environment_as_is(current: dict[str, Any] | None) -> dict[str, Any] | None:
    """An environment as GET returns it, in the shape of desired_environment()."""
    if current is None:
        return None
    body: dict[str, Any] = {"deployment_branch_policy": current.get("deployment_branch_policy")}
    for rule in current.get("protection_rules") or []:
        if rule.get("type") == "required_reviewers":
            body["reviewers"] = sorted(
                ({"type": r["type"], "id": r["reviewer"]["id"]} for r in rule.get("reviewers", [])),
                key=lambda r: r["id"],
            )
            body["prevent_self_review"] = bool(rule.get("prevent_self_review"))
    return body


def ruleset_as_is(current: dict[str, Any] | None) -> dict[str, Any] | None:
    if current is None:
        return None
    return {key: current.get(key) for key in desired_ruleset()}


def plan(api: Api, repo: str, reviewer_ids: list[int]) -> list[tuple[str, str, str, Any]]:
    """What differs from DESIRED: (what, method, path, body) for each change."""
    changes: list[tuple[str, str, str, Any]] = []
    for name in ENVIRONMENTS:
        path = f"/repos/{repo}/environments/{name}"
        want = desired_environment(name, reviewer_ids)
        have = environment_as_is(api.call("GET", path))
        if have != want:
            what = "create" if have is None else "update"
            changes.append((f"{what} environment {name}: {json.dumps(want)}", "PUT", path, want))
        policies = api.call("GET", f"{path}/deployment-branch-policies") if have else None
        names = {p.get("name") for p in (policies or {}).get("branch_policies", [])}
        if names != {BRANCH}:
            changes.append(
                (
                    f"environment {name}: deployment branches {sorted(names)} -> [{BRANCH}]",
                    "POST",
                    f"{path}/deployment-branch-policies",
                    {"name": BRANCH, "type": "branch"},
                )
            )
    rulesets = api.call("GET", f"/repos/{repo}/rulesets") or []
    found = next((r for r in rulesets if r.get("name") == RULESET), None)
    current = api.call("GET", f"/repos/{repo}/rulesets/{found['id']}") if found else None
    want = desired_ruleset()
    if ruleset_as_is(current) != want:
        if found:
            changes.append(
                (
                    f"update ruleset {RULESET}: {json.dumps(want)}",
                    "PUT",
                    f"/repos/{repo}/rulesets/{found['id']}",
                    want,
                )
            )
        else:
            changes.append(
                (
                    f"create ruleset {RULESET}: {json.dumps(want)}",
                    "POST",
                    f"/repos/{repo}/rulesets",
                    want,
                )
            )
    return changes


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("repo", help="owner/name")
    parser.add_argument(
        "--reviewer", action="append", required=True, help="a reviewer's GitHub login (repeat)"
    )
    parser.add_argument("--apply", action="store_true", help="make the changes (else: print them)")
    args = parser.parse_args(argv)
    token = os.environ.get("GH_TOKEN") or os.environ.get("GITHUB_TOKEN")
    if not token:
        print(
            "github-settings: set GH_TOKEN to a token with administration access", file=sys.stderr
        )
        return 2
    api = Api(os.environ.get("GITHUB_API_URL", API), token)
    try:
        ids = []
        for login in args.reviewer:
            user = api.call("GET", f"/users/{urllib.parse.quote(login)}")
            if user is None:
                print(f"github-settings: no GitHub user {login!r}", file=sys.stderr)
                return 2
            ids.append(int(user["id"]))
        changes = plan(api, args.repo, ids)
        if not changes:
            print(f"github-settings: {args.repo} is as it should be; nothing to change")
            return 0
        for what, method, path, body in changes:
            if args.apply:
                api.call(method, path, body)
                print(f"changed: {what}")
            else:
                print(f"would {what}")
        if args.apply:
            left = plan(api, args.repo, ids)
            if left:
                print(f"github-settings: still different after applying: {[w for w, *_ in left]}")
                return 2
            return 0
        print("github-settings: a dry run; --apply makes these changes")
        return 1
    except ApiError as exc:
        print(f"github-settings: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
