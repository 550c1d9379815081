"""The operator's everyday views on the live host: `make status` (colours,
versions, health, events, shared services, alerts firing) and `make logs`
(printed through Ansible, or followed over the host's own connection) for a
colour's service and for a shared service."""

from __future__ import annotations

import subprocess
from typing import Any

from conftest import ROOT, run_playbook, serving

from harness import playbook


def logs(*args: str, follow: bool = False, seconds: int = 60) -> subprocess.CompletedProcess[str]:
    env = dict(playbook.env(), FOLLOW="1" if follow else "0", LOG_LINES="20")
    command = [str(ROOT / "scripts" / "logs.sh"), playbook.inventory(), *args]
    if follow:  # it follows until stopped: let it run a few seconds
        command = ["timeout", str(seconds), *command]
    return subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )


def test_status_shows_what_serves_and_what_fires(host: Any) -> None:
    color, version = serving()
    rc, out, seconds = run_playbook("status.yml")
    assert rc == 0, out[-3000:]
    assert f"nginx serves: {color} ({version})" in out
    assert "health: blue backend" in out and f"{color} backend ok {version}" in out
    assert "last events:" in out and "canary: none" in out and "no drift" in out
    assert "shared services: archibald-redis" in out
    # The dead man's switch always fires: its presence proves the query works.
    assert "alerts firing:" in out and "Watchdog" in out, out[-3000:]
    print(f"\n[status] status.yml in {seconds:.0f} s")


def test_logs_of_the_active_colour_and_of_a_shared_service(host: Any) -> None:
    color, _ = serving()
    printed = logs("active", "backend")
    assert printed.returncode == 0, printed.stdout[-2000:] + printed.stderr[-2000:]
    assert "rc=0" in printed.stdout, printed.stdout[-2000:]
    followed = logs(color, "frontend", follow=True, seconds=6)
    # timeout(1) ends the follow: 124 means it was still following.
    assert followed.returncode == 124, followed.stderr[-2000:]
    assert f"following archibald-frontend-{color}" in followed.stderr
    assert len(followed.stdout.splitlines()) >= 1
    redis = logs("--accessory", "redis")
    assert redis.returncode == 0 and "Ready to accept connections" in redis.stdout, (
        redis.stdout[-2000:] + redis.stderr[-2000:]
    )
    print(
        f"\n[logs] printed backend-{color}'s last lines; followed "
        f"frontend-{color} for 6 s ({len(followed.stdout.splitlines())} lines); redis's log read"
    )
