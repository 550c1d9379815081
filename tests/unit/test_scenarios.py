"""harness/scenarios.py: online scenarios say plainly when they were not run,
and fail instead where they are required; the GitHub estimate adds up."""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpstub import serving

from harness import scenarios


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/gpg.key" else 404)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    with serving(Handler) as port:
        yield f"http://127.0.0.1:{port}"


def _online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str) -> scenarios.Run:
    defaults = tmp_path / "defaults.yml"
    defaults.write_text(f"probe_url: {url}\n")
    monkeypatch.setattr(scenarios, "ONLINE", {"online": (defaults, "probe_url")})
    return scenarios.Run("online", 60, tmp_path / "online.log")


def test_unreachable_repository_is_not_run_and_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TESTBED_ONLINE_TESTS", raising=False)
    run = _online(monkeypatch, tmp_path, "https://grafana-repository.invalid/gpg.key")
    assert scenarios.skip_offline(run)
    assert run.skipped and not run.ok
    assert "not run: repository unreachable" in capsys.readouterr().out


def test_required_online_scenario_runs_even_when_unreachable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TESTBED_ONLINE_TESTS", "required")
    run = _online(monkeypatch, tmp_path, "https://grafana-repository.invalid/gpg.key")
    assert not scenarios.skip_offline(run)
    assert not run.skipped


def test_reachable_repository_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: str
) -> None:
    monkeypatch.delenv("TESTBED_ONLINE_TESTS", raising=False)
    assert not scenarios.skip_offline(_online(monkeypatch, tmp_path, f"{server}/gpg.key"))
    assert scenarios.unreachable(f"{server}/missing") == "HTTP 404"


def test_offline_scenarios_are_never_skipped(tmp_path: Path) -> None:
    assert not scenarios.skip_offline(scenarios.Run("grafana", 60, tmp_path / "g.log"))


def test_the_online_scenario_reads_the_roles_repository_url() -> None:
    assert scenarios.online_url("grafana_online").endswith("/gpg.key")


def test_github_estimate_is_the_longest_job_plus_the_image(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert scenarios.estimate_github() == 0
    out = capsys.readouterr().out
    longest = scenarios.GITHUB_JOB_SETUP_S + max(scenarios.BUDGETS_S.values())
    total = (longest + scenarios.GITHUB_IMAGE_JOB_S) / 60
    assert f"= {total:.1f} min" in out
