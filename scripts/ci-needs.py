#!/usr/bin/env python3
"""The verdict of a workflow's aggregate job: every job it needs succeeded.

GitHub counts a skipped required check as passing, so a branch rule that
requires each job passes when a failure upstream skipped the jobs after it.
ci.yml's last job (`if: always()`, needing every other job) runs this with
`NEEDS` set to `${{ toJSON(needs) }}`, and is the one check a branch rule
requires:

    NEEDS='{"lint": {"result": "success", "outputs": {}}}' scripts/ci-needs.py

It prints each job's result and exits 1 unless all are "success" (failure,
cancelled and skipped all fail it), 2 when NEEDS is not what GitHub writes.
"""

from __future__ import annotations

import json
import os
import sys


def verdict(needs: dict[str, dict[str, object]]) -> tuple[bool, list[str]]:
    """(all succeeded, one line per job)."""
    lines = [f"{job}: {info.get('result')}" for job, info in sorted(needs.items())]
    ok = bool(needs) and all(info.get("result") == "success" for info in needs.values())
    return ok, lines


def main() -> int:
    try:
        needs = json.loads(os.environ["NEEDS"])
        assert isinstance(needs, dict) and all(isinstance(v, dict) for v in needs.values())
    except (KeyError, ValueError, AssertionError):
        print("::error::NEEDS must hold ${{ toJSON(needs) }}: a JSON object of jobs")
        return 2
    ok, lines = verdict(needs)
    print("\n".join(lines))
    if not ok:
        failed = [job for job, info in sorted(needs.items()) if info.get("result") != "success"]
        print(f"::error::not every job succeeded: {', '.join(failed) or 'no jobs were needed'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
