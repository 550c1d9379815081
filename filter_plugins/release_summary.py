# Copyright: the archibald-ops authors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The closing message of a release (playbooks/release.yml, so deploy.yml and
`make deploy`): what serves, read through the edge's /health, and the URLs of
what is really installed. Grafana's URL only when it answers behind nginx;
otherwise the line says why not. Documentation: ``release_summary.yml``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

HEALTH = "/health"
GRAFANA_HEALTH = "/grafana/api/health"


def _answers(results: Any) -> dict[str, Mapping[str, Any]]:
    """The uri loop's results by the path asked."""
    if not isinstance(results, Sequence) or isinstance(results, str):
        raise AnsibleFilterError(
            f"release_summary wants the uri loop's results (a list), got {type(results).__name__}"
        )
    found: dict[str, Mapping[str, Any]] = {}
    for result in results:
        if not isinstance(result, Mapping) or "item" not in result:
            raise AnsibleFilterError(f"release_summary: not a uri loop result: {result!r}")
        found[str(result["item"])] = result
    missing = sorted({HEALTH, GRAFANA_HEALTH} - set(found))
    if missing:
        raise AnsibleFilterError(
            f"release_summary: the edge was not asked {missing} (asked {sorted(found)})"
        )
    return found


def _status(answer: Mapping[str, Any]) -> str:
    status = answer.get("status", -1)
    if isinstance(status, int) and status > 0:
        return f"HTTP {status}"
    return f"no answer: {answer.get('msg', 'unknown error')}"


def _serving(answer: Mapping[str, Any]) -> str:
    body = answer.get("json")
    if answer.get("status") == 200 and isinstance(body, Mapping) and body.get("color"):
        return f"{body['color']} {body.get('version', '?')} (the edge's {HEALTH})"
    return (
        f"unknown: the edge's {HEALTH} gave {_status(answer)}; "
        "see `ansible-playbook playbooks/status.yml -i <inventory>`"
    )


def _grafana(answer: Mapping[str, Any], package: Mapping[str, Any], url: str) -> str:
    body = answer.get("json")
    if answer.get("status") == 200 and isinstance(body, Mapping) and "database" in body:
        return f"{url}/grafana/"
    installed = package.get("rc") == 0 and "install ok installed" in str(package.get("stdout"))
    if installed:
        return (
            f"installed, but {url}/grafana/ is down (the edge gave {_status(answer)}): "
            "see `systemctl status grafana-server` on the host"
        )
    return (
        f"not installed, so {url}/grafana/ serves nothing (the edge gave {_status(answer)}): "
        "the grafana role skips the package when grafana_install is false, or when Grafana's "
        "repository is unreachable and grafana_required is false (its SKIPPED line in "
        "deploy.yml's output says which)"
    )


def release_summary(results: Any, grafana_package: Any, public_url: str) -> list[str]:
    """The closing lines: what serves, then the URLs of what is installed."""
    if not isinstance(grafana_package, Mapping):
        raise AnsibleFilterError(
            "release_summary: grafana_package must be the dpkg-query result (a dict), "
            f"got {type(grafana_package).__name__}"
        )
    url = str(public_url).rstrip("/")
    answers = _answers(results)
    return [
        f"Serving:    {_serving(answers[HEALTH])}",
        f"App:        {url}/",
        f"API:        {url}/api/jobs",
        f"Health:     {url}{HEALTH}",
        f"Grafana:    {_grafana(answers[GRAFANA_HEALTH], grafana_package, url)}",
        "Prometheus: http://127.0.0.1:9090 on the host (ssh -L 9090:127.0.0.1:9090)",
        "Status:     ansible-playbook playbooks/status.yml -i <inventory>",
    ]


class FilterModule:
    """The closing message of a release."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"release_summary": release_summary}
