"""system-packages.txt is the one list of Debian packages: the README's install
line, .ci/run and ci.yml's jobs all install from it through
scripts/system-packages.sh, and none names a package of its own.

A newcomer who follows the README gets what `.ci/run` installs (every group);
GitHub's jobs install the groups they need, and together every group but
those the runner already has.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LIST = ROOT / "system-packages.txt"
READER = "scripts/system-packages.sh"
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
# Groups GitHub's ubuntu-24.04 runners already have (system-packages.txt says why).
RUNNER_HAS = {"base", "docker"}
# An install line that reads the list: `scripts/system-packages.sh [group...] |
# [sudo] xargs apt-get install <options>`.
FROM_LIST = re.compile(
    r"scripts/system-packages\.sh(?P<groups>(?:\s+[a-z0-9-]+)*)\s*\|\s*(?:sudo\s+)?xargs\s+"
    r"apt-get install(?P<rest>[^\n]*)"
)
INSTALL = re.compile(r"apt-get\s+install\b[^\n]*")


def parse(text: str) -> dict[str, list[str]]:
    """Group name -> its packages, in the file's order; a package outside a group fails."""
    groups: dict[str, list[str]] = {}
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        header = re.fullmatch(r"\[([a-z0-9-]+)\]", line)
        if header:
            current = header.group(1)
            assert current not in groups, f"system-packages.txt:{number}: [{current}] twice"
            groups[current] = []
            continue
        assert current, f"system-packages.txt:{number}: {line} comes before any [group]"
        # A package, and optionally the command whose presence makes it unneeded.
        assert re.fullmatch(r"[a-z0-9][a-z0-9.+-]+(\s+[a-z0-9][a-z0-9.+-]*)?", line), (
            f"system-packages.txt:{number}: {line!r} is not one Debian package name "
            "(and, optionally, a command)"
        )
        package, *unless = line.split()
        groups[current].append(package)
        if unless:
            UNLESS[package] = unless[0]
    return groups


# Package -> the command whose presence makes the reader leave it out.
UNLESS: dict[str, str] = {}
GROUPS = parse(LIST.read_text(encoding="utf-8"))
EVERY = [package for packages in GROUPS.values() for package in packages]


def installs(text: str, where: str) -> list[list[str]]:
    """The groups each `apt-get install` in `text` reads ([] = every group). An install
    that names packages itself, or options-only words aside, fails naming the line."""
    found: list[list[str]] = []
    for match in INSTALL.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        line_end = text.find("\n", match.end())
        line = text[line_start : line_end if line_end >= 0 else len(text)]
        reader = FROM_LIST.search(line)
        assert reader, (
            f"{where}: `{line.strip()}` installs packages that do not come from "
            f"system-packages.txt; pipe `{READER} [group...]` into `xargs apt-get install`"
        )
        extra = [w for w in reader.group("rest").split() if not w.startswith(("-", ">", "2>"))]
        assert not extra, f"{where}: `{line.strip()}` names packages of its own: {extra}"
        found.append(reader.group("groups").split())
    return found


def packages_of(groups: list[str]) -> set[str]:
    unknown = sorted(set(groups) - set(GROUPS))
    assert not unknown, f"no such group in system-packages.txt: {unknown}; have {list(GROUPS)}"
    return set(EVERY) if not groups else {p for g in groups for p in GROUPS[g]}


def workflow_installs() -> dict[str, list[list[str]]]:
    """'workflow:job' -> the groups each of its install lines reads."""
    found: dict[str, list[list[str]]] = {}
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
        for job_id, job in workflow["jobs"].items():
            for step in job.get("steps", []):
                where = f"{path.name}:{job_id}:{step.get('name', '?')}"
                for groups in installs(str(step.get("run", "")), where):
                    found.setdefault(f"{path.name}:{job_id}", []).append(groups)
    return found


def test_the_list_has_groups_each_with_a_comment_and_no_package_twice() -> None:
    text = LIST.read_text(encoding="utf-8")
    for name in GROUPS:
        after = text.split(f"[{name}]", 1)[1].lstrip("\n")
        assert after.startswith("#"), f"[{name}] needs a comment saying what needs it"
        assert GROUPS[name], f"[{name}] is empty"
    twice = sorted({p for p in EVERY if EVERY.count(p) > 1})
    assert not twice, f"in more than one group of system-packages.txt: {twice}"


@pytest.mark.parametrize("groups", [[], *([g] for g in GROUPS), ["unit", "images"]], ids=str)
def test_the_reader_prints_what_the_file_lists(groups: list[str]) -> None:
    out = subprocess.run(
        [str(ROOT / READER), *groups], capture_output=True, text=True, check=True
    ).stdout.split()
    listed = EVERY if not groups else [p for g in GROUPS if g in groups for p in GROUPS[g]]
    expected = [p for p in listed if p not in UNLESS or shutil.which(UNLESS[p]) is None]
    assert out == expected


def test_a_package_whose_command_is_there_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / READER, tmp_path / READER)
    (tmp_path / "system-packages.txt").write_text(
        "[tools]\n# what needs them\nsh-provider sh\nnever-there no-such-command-here\nplain\n",
        encoding="utf-8",
    )
    out = subprocess.run(
        [str(tmp_path / READER)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["never-there", "plain"]


def test_the_reader_refuses_an_unknown_group_and_prints_nothing() -> None:
    result = subprocess.run(
        [str(ROOT / READER), "unit", "no-such-group"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "no such group: no-such-group" in result.stderr and "unit" in result.stderr


@pytest.mark.parametrize(
    ("line", "groups"),
    [
        ("scripts/system-packages.sh | xargs apt-get install -y --no-install-recommends", []),
        ("scripts/system-packages.sh unit | sudo xargs apt-get install -y -q", ["unit"]),
        ("scripts/system-packages.sh a b | xargs apt-get install -y >/dev/null", ["a", "b"]),
    ],
)
def test_an_install_from_the_list_is_read(line: str, groups: list[str]) -> None:
    assert installs(line, "here") == [groups]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("apt-get install -y docker.io make", "do not come from system-packages.txt"),
        ("sudo apt-get install -y -q --no-install-recommends \\", "do not come from"),
        ("scripts/system-packages.sh | xargs apt-get install -y curl", r"of its own: \['curl'\]"),
    ],
)
def test_an_install_with_its_own_packages_fails(line: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        installs(line, "here")


def test_the_readme_installs_every_group() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = installs(readme, "README.md")
    assert found, f"README.md has no install line that reads system-packages.txt ({READER})"
    for groups in found:
        missing = sorted(set(EVERY) - packages_of(groups))
        assert not missing, f"README.md's install line leaves out {missing}"


def test_ci_run_installs_every_group() -> None:
    found = installs((ROOT / ".ci" / "run").read_text(encoding="utf-8"), ".ci/run")
    assert len(found) == 1, f".ci/run should install once from system-packages.txt: {found}"
    missing = sorted(set(EVERY) - packages_of(found[0]))
    assert not missing, f".ci/run's install leaves out {missing}"


def test_github_installs_every_group_the_runner_lacks() -> None:
    used = {g for lines in workflow_installs().values() for groups in lines for g in groups}
    assert all(lines and all(lines) for lines in workflow_installs().values()), (
        "a GitHub job installs every group, Docker included: name the groups it needs"
    )
    assert set(GROUPS) >= RUNNER_HAS, f"RUNNER_HAS names groups the file lacks: {RUNNER_HAS}"
    missing = sorted(set(GROUPS) - RUNNER_HAS - used)
    assert not missing, f"no GitHub job installs system-packages.txt's groups {missing}"
    needless = sorted(used & RUNNER_HAS)
    assert not needless, f"GitHub's runners have {needless} already (docker.io conflicts)"


def test_the_unit_job_installs_every_tool_the_unit_tests_call() -> None:
    """The unit tests skip without these (and the skip guard fails the run in CI):
    the unit job must install the whole unit group, mtail included."""
    unit = workflow_installs().get("ci.yml:unit", [])
    assert any("unit" in groups for groups in unit), (
        f"ci.yml's unit job installs {unit}, not system-packages.txt's unit group "
        f"({GROUPS['unit']})"
    )
    assert {"prometheus", "prometheus-alertmanager", "mtail", "shellcheck"} <= set(GROUPS["unit"])


# The programs the unit tests run, found the way they find them, and the Debian
# package of each. A new `shutil.which("tool")` in a unit test fails here until
# the tool's package is in the unit group (test_preview_token's nginx was not:
# the unit stage failed on a fresh machine).
TOOL_PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
    "mtail": "mtail",
    "shellcheck": "shellcheck",
    "nginx": "nginx",
    "gpg": "gpg",
    "chromium": "chromium",
}
CALLS = re.compile(r'shutil\.which\("(?P<tool>[\w.-]+)"\)|"/usr/s?bin/(?P<path>[\w.-]+)"')


def test_every_program_the_unit_tests_run_comes_from_the_unit_group() -> None:
    found: dict[str, str] = {}
    tests = [
        *ROOT.glob("tests/unit/**/*.py"),
        *ROOT.glob("app/tests/**/*.py"),
        *ROOT.glob("node/*/test/**/*.js"),
    ]
    for test in sorted(tests):
        if test == Path(__file__).resolve():
            continue  # this file names the pattern, not a program it runs
        for match in CALLS.finditer(test.read_text(encoding="utf-8")):
            found.setdefault(match["tool"] or match["path"], str(test.relative_to(ROOT)))
    assert found, "no program found: the pattern no longer matches how the tests find them"
    unknown = {tool: where for tool, where in found.items() if tool not in TOOL_PACKAGES}
    assert not unknown, f"say which Debian package brings these (TOOL_PACKAGES): {unknown}"
    missing = {
        tool: TOOL_PACKAGES[tool] for tool in found if TOOL_PACKAGES[tool] not in GROUPS["unit"]
    }
    assert not missing, (
        f"the unit group of system-packages.txt lacks these tools' packages: {missing}"
    )
