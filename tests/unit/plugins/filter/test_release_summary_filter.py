"""filter_plugins/release_summary.py: a release ends with what serves (read
through the edge) and the URLs of what is really installed; Grafana's only when
it answers, otherwise why not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from release_summary import GRAFANA_HEALTH, HEALTH, FilterModule, release_summary

ROOT = Path(__file__).resolve().parents[4]
URL = "https://127.0.0.1:8443"
SERVING = {
    "item": HEALTH,
    "status": 200,
    "json": {"status": "ok", "color": "green", "version": "v2"},
}
GRAFANA_UP = {"item": GRAFANA_HEALTH, "status": 200, "json": {"database": "ok", "version": "11"}}
GRAFANA_502 = {"item": GRAFANA_HEALTH, "status": 502, "msg": "Status code was 502"}
INSTALLED = {"rc": 0, "stdout": "install ok installed"}
ABSENT = {"rc": 1, "stdout": "", "stderr": "dpkg-query: no packages found matching grafana"}


def line(lines: list[str], key: str) -> str:
    return next(entry for entry in lines if entry.startswith(f"{key}:"))


@pytest.mark.parametrize(
    ("health", "expected"),
    [
        (SERVING, "Serving:    green v2 (the edge's /health)"),
        (
            {"item": HEALTH, "status": 503, "json": {"status": "draining", "color": "blue"}},
            "Serving:    unknown: the edge's /health gave HTTP 503; see `ansible-playbook "
            "playbooks/status.yml -i <inventory>`",
        ),
        (
            {"item": HEALTH, "status": -1, "msg": "Connection refused"},
            "Serving:    unknown: the edge's /health gave no answer: Connection refused; see "
            "`ansible-playbook playbooks/status.yml -i <inventory>`",
        ),
    ],
)
def test_serving_is_what_the_edge_answered(health: dict[str, Any], expected: str) -> None:
    assert line(release_summary([health, GRAFANA_UP], INSTALLED, URL), "Serving") == expected


@pytest.mark.parametrize(
    ("grafana", "package", "expected"),
    [
        (GRAFANA_UP, INSTALLED, f"Grafana:    {URL}/grafana/"),
        (
            GRAFANA_502,
            ABSENT,
            f"Grafana:    not installed, so {URL}/grafana/ serves nothing (the edge gave HTTP "
            "502): the grafana role skips the package when grafana_install is false, or when "
            "Grafana's repository is unreachable and grafana_required is false (its SKIPPED "
            "line in deploy.yml's output says which)",
        ),
        (
            GRAFANA_502,
            INSTALLED,
            f"Grafana:    installed, but {URL}/grafana/ is down (the edge gave HTTP 502): see "
            "`systemctl status grafana-server` on the host",
        ),
        # Without nginx's /grafana/ location the frontend answers: not Grafana.
        (
            {"item": GRAFANA_HEALTH, "status": 200, "json": {"error": "not found"}},
            {"rc": 0, "stdout": "deinstall ok config-files"},
            f"Grafana:    not installed, so {URL}/grafana/ serves nothing (the edge gave HTTP 200)",
        ),
    ],
)
def test_grafana_url_only_when_it_answers(
    grafana: dict[str, Any], package: dict[str, Any], expected: str
) -> None:
    assert line(release_summary([SERVING, grafana], package, URL), "Grafana").startswith(expected)


def test_the_urls_follow_public_url() -> None:
    lines = release_summary([SERVING, GRAFANA_UP], INSTALLED, URL + "/")
    assert lines[1:4] == [
        f"App:        {URL}/",
        f"API:        {URL}/api/jobs",
        f"Health:     {URL}/health",
    ]
    assert lines[0].startswith("Serving:") and lines[-1].startswith("Status:")


@pytest.mark.parametrize(
    ("results", "package", "message"),
    [
        ({"results": []}, INSTALLED, "wants the uri loop's results"),
        ([SERVING], INSTALLED, r"was not asked \['/grafana/api/health'\]"),
        ([{"status": 200}], INSTALLED, "not a uri loop result"),
        ([SERVING, GRAFANA_UP], "installed", "grafana_package must be the dpkg-query result"),
    ],
)
def test_bad_input_says_what_was_expected(results: Any, package: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        release_summary(results, package, URL)


def test_release_yml_asks_what_the_filter_reads() -> None:
    """The playbook's closing tasks and the filter name the same paths and results."""
    play = yaml.safe_load((ROOT / "playbooks" / "release.yml").read_text())[0]
    tasks = {task["name"]: task for task in play["tasks"]}
    ask = tasks["Ask the edge what serves, and whether Grafana answers behind it"]
    assert ask["loop"] == [HEALTH, GRAFANA_HEALTH]
    assert ask["failed_when"] is False and ask["check_mode"] is False
    package = tasks["Look for the Grafana package on the host"]
    assert package["ansible.builtin.command"]["argv"][-1] == "grafana"
    message = tasks["Print what serves and the URLs of what is installed"]
    text = message["ansible.builtin.debug"]["msg"]
    assert f"{ask['register']}.results | release_summary({package['register']}," in text
    assert play["tasks"][-1] is message, "the summary is the release's last word"
    assert FilterModule().filters() == {"release_summary": release_summary}
