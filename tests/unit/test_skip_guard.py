"""harness/skips.py: in CI a skip that is not on the list fails the run and is
named; a listed skip passes and the summary says why and where it runs; outside
CI an unlisted skip only warns."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import skips

pytest_plugins = ["pytester"]

TESTS = """
import pytest

def test_runs():
    pass

def test_listed():
    pytest.skip("no tool here")

def test_unlisted():
    pytest.skip("mtail is not installed")
"""
LISTED = skips.Allowed("test_it.py::test_listed", "the tool is not here", "GitHub's unit job")


def run(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    ci: str | None,
    allowed: tuple[skips.Allowed, ...],
    source: str = TESTS,
) -> pytest.RunResult:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(skips, "ALLOWED", allowed)
    pytester.makepyfile(test_it=source)
    return pytester.runpytest("-p", "harness.skips")


def test_an_unlisted_skip_fails_the_run_in_ci_and_is_named(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(pytester, monkeypatch, "true", (LISTED,))
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*1 skip(s) not on the list: FAIL (CI=true)*",
            "  test_it.py::test_unlisted: mtail is not installed",
        ]
    )


def test_listed_skips_pass_in_ci_and_the_summary_says_why_and_where(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    unlisted_too = skips.Allowed("test_it.py::test_un*", "not here either", "the nginx scenario")
    result = run(pytester, monkeypatch, "true", (LISTED, unlisted_too))
    result.assert_outcomes(passed=1, skipped=2)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "*skips (harness/skips.py: no silent skips)*",
            "  test_it.py::test_listed: skipped 1 here",
            "      why: the tool is not here",
            "      runs in: GitHub's unit job",
            "  test_it.py::test_un*: skipped 1 here",
        ]
    )
    result.stdout.no_fnmatch_line("*not on the list*")


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_outside_ci_an_unlisted_skip_only_warns(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    result = run(pytester, monkeypatch, ci, (LISTED,))
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*1 skip(s) not on the list: warning (CI is not true*"])


def test_a_failing_run_keeps_its_own_exit_code(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(pytester, monkeypatch, "true", (), TESTS + "\ndef test_bad():\n    assert 0\n")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*2 skip(s) not on the list: FAIL (CI=true)*"])


def test_a_module_skipped_at_collection_counts_too(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = "import pytest\npytest.skip('no amtool', allow_module_level=True)\n"
    result = run(pytester, monkeypatch, "true", (), source)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["  test_it.py: no amtool"])


def test_an_expected_failure_is_not_a_skip(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = "import pytest\n@pytest.mark.xfail(reason='known')\ndef test_x():\n    assert 0\n"
    result = run(pytester, monkeypatch, "true", (), source)
    result.assert_outcomes(xfailed=1)
    assert result.ret == pytest.ExitCode.OK


@pytest.mark.parametrize(
    ("pattern", "nodeid", "matches"),
    [
        ("t/w.py::test_actionlint", "t/w.py::test_actionlint", True),
        ("t/w.py::test_actionlint", "t/w.py::test_actionlint2", False),
        ("m/t.py::*nginx-deb13*", "m/t.py::test_flood[ansible://nginx-deb13]", True),
        ("m/t.py::*nginx-deb13*", "m/t.py::test_flood[ansible://nginx-deb12]", False),
        ("m/t.py::*[x]", "m/t.py::test_a[x]", True),
    ],
)
def test_patterns_match_whole_node_ids(pattern: str, nodeid: str, matches: bool) -> None:
    assert skips.Allowed(pattern, "r", "w").matches(nodeid) is matches


def test_node_ids_are_made_relative_to_the_repository(tmp_path: Path) -> None:
    scenario = skips.ROOT / "molecule" / "nginx"
    assert (
        skips.repo_nodeid("tests/test_edge_hardening.py::test_a[x]", scenario)
        == "molecule/nginx/tests/test_edge_hardening.py::test_a[x]"
    )
    assert skips.repo_nodeid("test_it.py::test_a", tmp_path) == "test_it.py::test_a"


def test_every_allowed_skip_names_a_test_file_that_exists() -> None:
    for entry in skips.ALLOWED:
        path, _, test = entry.pattern.partition("::")
        assert (skips.ROOT / path).is_file(), f"{entry.pattern}: no file {path}"
        name = test.partition("[")[0]
        if "*" not in name:
            source = (skips.ROOT / path).read_text(encoding="utf-8")
            assert f"def {name}(" in source, f"{entry.pattern}: no test {name} in {path}"
        assert entry.reason and entry.runs_in, entry


def test_github_jobs_that_run_tests_under_sudo_keep_ci() -> None:
    """sudo drops the environment: a job that runs its tests through it must keep CI,
    or its skips only warn."""
    workflow = yaml.safe_load((skips.ROOT / ".github/workflows/ci.yml").read_text())
    for job_id, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            script = str(step.get("run", ""))
            if "sudo" in script and "make " in script and "--preserve-env" in script:
                keep = next(line for line in script.splitlines() if "keep=" in line)
                assert "CI" in keep.split("=", 1)[1].split(","), f"ci.yml:{job_id}: {keep}"
