"""Verify Grafana installed from its repository, as an operator reaches it.

Through nginx at https://<host>/grafana/: it answers, the admin logs in with
the configured (in production: vault) password and a wrong one is refused,
the Prometheus datasource and the four dashboards are provisioned (Grafana's
HTTP API), and a panel query of System Overview returns data through Grafana.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from harness.wait import until

SCENARIO = Path(os.environ.get("MOLECULE_SCENARIO_DIRECTORY", Path(__file__).parents[1]))
DASHBOARDS = SCENARIO.parents[1] / "roles/grafana/files/dashboards"
PASSWORD = "online-grafana-admin-pw"
BASE = "https://127.0.0.1/grafana"


def _curl(host, path: str, *args: str, password: str | None = PASSWORD) -> tuple[int, Any]:
    """Ask Grafana through nginx on the host; return (HTTP status, parsed JSON or text)."""
    auth = ["-u", f"admin:{password}"] if password is not None else []
    cmd = host.run(
        "curl -sk --max-time 10 -H 'Host: localhost' -o /tmp/answer -w '%{http_code}' "
        + " ".join(f"'{a}'" for a in [*auth, *args, BASE + path])
    )
    assert cmd.rc == 0, cmd.stderr
    body = host.file("/tmp/answer").content_string
    try:
        return int(cmd.stdout), json.loads(body)
    except ValueError:
        return int(cmd.stdout), body


def test_grafana_runs_from_its_package_on_loopback(host) -> None:
    assert host.package("grafana").is_installed
    service = host.service("grafana-server")
    assert service.is_running
    assert service.is_enabled
    assert host.socket("tcp://127.0.0.1:3000").is_listening
    assert not host.socket("tcp://0.0.0.0:3000").is_listening
    # The drop-in's limit is in force in the running service.
    assert host.check_output("systemctl show grafana-server -p MemoryMax --value") == str(
        512 * 2**20
    )


def test_unattended_upgrades_take_grafanas_updates_beside_debians_security(host) -> None:
    dump = host.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern")
    patterns = re.findall(r'Origins-Pattern:: "(.*)";', dump)
    assert "site=apt.grafana.com" in patterns, patterns
    assert any("Debian-Security" in p for p in patterns), patterns


def test_grafana_answers_through_nginx(host) -> None:
    status, body = _curl(host, "/api/health", password=None)
    assert status == 200, body
    assert body["database"] == "ok"


def test_admin_logs_in_with_the_configured_password(host) -> None:
    status, body = _curl(host, "/api/user")
    assert status == 200, body
    assert body["login"] == "admin"
    status, _body = _curl(host, "/api/user", password="not-the-password")
    assert status == 401


def test_prometheus_datasource_is_provisioned(host) -> None:
    status, body = _curl(host, "/api/datasources/uid/prometheus")
    assert status == 200, body
    assert body["type"] == "prometheus"
    assert body["url"] == "http://127.0.0.1:9090"
    status, health = _curl(host, "/api/datasources/uid/prometheus/health")
    assert status == 200, health
    assert health["status"] == "OK", health


def test_the_four_dashboards_are_provisioned(host) -> None:
    want = {json.loads(p.read_text())["uid"]: p for p in DASHBOARDS.glob("*.json")}
    assert len(want) == 4
    status, found = _curl(host, "/api/search?type=dash-db")
    assert status == 200, found
    assert {d["uid"] for d in found} == set(want)
    assert {d["folderTitle"] for d in found} == {"Archibald"}


def _panel_query(name: str) -> dict[str, Any]:
    dashboard = json.loads((DASHBOARDS / "system-overview.json").read_text())
    panel = next(p for p in dashboard["panels"] if p.get("title") == name)
    target = panel["targets"][0]
    return {
        "queries": [
            {
                "refId": "A",
                "datasource": panel["datasource"],
                "expr": target["expr"],
                "instant": True,
                "range": False,
            }
        ],
        "from": "now-5m",
        "to": "now",
    }


@pytest.mark.parametrize("panel", ["Load average", "Memory used"])
def test_a_system_overview_panel_query_returns_data(host, panel: str) -> None:
    query = json.dumps(_panel_query(panel))

    def values() -> list[Any]:
        status, body = _curl(
            host,
            "/api/ds/query",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            query,
        )
        assert status == 200, body
        frames = body["results"]["A"].get("frames", [])
        return [v for f in frames for v in (f.get("data", {}).get("values") or [[]])[-1]]

    # The first scrapes (15 s interval); a timeout says Grafana's query returned no data.
    until(f"{panel}: data through Grafana's datasource", values, 90, 5)
