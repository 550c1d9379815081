"""Maintenance mode on the live host: playbooks/maintenance.yml on, the page
and the API answer 503 with Retry-After (HTML and JSON), /health keeps
answering, a release refuses and says how to go on; off, the site is back.
No reload, no restart: /health is probed throughout and nothing fails."""

from __future__ import annotations

import json
from typing import Any

from conftest import Prober, ask, run_playbook, serving


def test_maintenance_mode_on_and_off(host: Any) -> None:
    before = serving()
    with Prober() as prober:
        rc, out, on_s = run_playbook("maintenance.yml", "-e", "maintenance=on")
        assert rc == 0 and "Maintenance mode is ON" in out, out[-2000:]
        page = ask("/")
        api = ask("/api/jobs?limit=1")
        health = ask("/health")
        rc_release, refused, _ = run_playbook("release.yml", "-e", "app_version=v3")
        rc, out, off_s = run_playbook("maintenance.yml", "-e", "maintenance=off")
        assert rc == 0 and "Maintenance mode is OFF" in out, out[-2000:]
        back = ask("/")
    print(
        f"\n[maintenance] on in {on_s:.0f} s, off in {off_s:.0f} s; page {page[0]}, API {api[0]}, "
        f"/health {health[0]} meanwhile; {prober.summary()}"
    )
    assert page[0] == 503 and page[1]["Retry-After"] == "300"
    assert page[1]["Content-Type"].startswith("text/html") and b"maintenance" in page[2]
    assert api[0] == 503 and api[1]["Retry-After"] == "300"
    assert json.loads(api[2])["retry_after_s"] == 300
    assert health[0] == 200
    assert rc_release != 0 and "Maintenance mode is on" in refused, refused[-2000:]
    assert "-e app_force_maintenance=true" in refused
    assert back[0] == 200 and serving() == before
    assert not prober.failed(), prober.failed()[:5]
    assert not host.file("/etc/nginx/archibald/maintenance").exists
